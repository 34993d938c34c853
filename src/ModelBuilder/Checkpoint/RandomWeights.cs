namespace InferenceServer.ModelBuilder.Checkpoint;

/// <summary>
/// Deterministic random weights for a config alone, for tests and benchmarks of any size.
/// Each tensor's values depend only on the seed and the tensor's name, so the order the builder
/// reads them in does not matter. Norm weights are 1; other tensors are normal with the given
/// standard deviation (Hugging Face initializes with 0.02).
/// </summary>
public sealed class RandomWeights(ulong seed, float standardDeviation = 0.02f) : IWeightSource
{
    public bool Contains(string name) => true;

    public float[] Read(string name, ReadOnlySpan<long> expectedShape)
    {
        long count = 1;
        foreach (var d in expectedShape)
            count *= d;
        var values = new float[checked((int)count)];
        if (name.EndsWith("norm.weight", StringComparison.Ordinal))
        {
            values.AsSpan().Fill(1f);
            return values;
        }
        var state = seed ^ Fnv1a(name);
        if (state == 0)
            state = 0x9E3779B97F4A7C15UL;
        for (var i = 0; i < values.Length; i += 2)
        {
            // Box-Muller on two uniforms from xorshift64*.
            var u1 = (Next(ref state) >> 11) * (1.0 / (1UL << 53)) + 1e-12;
            var u2 = (Next(ref state) >> 11) * (1.0 / (1UL << 53));
            var radius = Math.Sqrt(-2.0 * Math.Log(u1)) * standardDeviation;
            values[i] = (float)(radius * Math.Cos(2 * Math.PI * u2));
            if (i + 1 < values.Length)
                values[i + 1] = (float)(radius * Math.Sin(2 * Math.PI * u2));
        }
        return values;
    }

    private static ulong Fnv1a(string text)
    {
        var hash = 14695981039346656037UL;
        foreach (var c in text)
        {
            hash ^= c;
            hash *= 1099511628211UL;
        }
        return hash;
    }

    private static ulong Next(ref ulong state)
    {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        return state * 2685821657736338717UL;
    }

    public void Dispose() { }
}
