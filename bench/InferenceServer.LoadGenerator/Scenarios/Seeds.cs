namespace InferenceServer.LoadGenerator.Scenarios;

/// <summary>
/// Independent seeds for the parts of a run (a level, a stream, a typist) derived from the one
/// the user gave, so each part's random choices do not depend on how the others were scheduled.
/// </summary>
public static class Seeds
{
    public static int Derive(int seed, params ReadOnlySpan<long> parts)
    {
        var state = unchecked((ulong)seed * 0x9E3779B97F4A7C15UL);
        foreach (var part in parts)
            state = Mix(state ^ unchecked((ulong)part));
        return unchecked((int)Mix(state));
    }

    // SplitMix64's finalizer: every input bit affects every output bit.
    private static ulong Mix(ulong z)
    {
        z = unchecked(z + 0x9E3779B97F4A7C15UL);
        z = unchecked((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL);
        z = unchecked((z ^ (z >> 27)) * 0x94D049BB133111EBUL);
        return z ^ (z >> 31);
    }

    /// <summary>A sample of a log-normal distribution with the given median and shape (sigma of the underlying normal).</summary>
    public static double LogNormal(Random random, double median, double sigma)
    {
        ArgumentNullException.ThrowIfNull(random);
        // Box-Muller: 1 - NextDouble() is in (0, 1], so the logarithm is finite.
        var u1 = 1.0 - random.NextDouble();
        var u2 = random.NextDouble();
        var normal = Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2.0 * Math.PI * u2);
        return median * Math.Exp(sigma * normal);
    }
}
