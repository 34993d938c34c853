namespace InferenceServer.Engine.Sampling;

/// <summary>
/// The xoshiro256** generator (Blackman and Vigna), seeded through SplitMix64. Written out here so
/// that a seeded request gives the same tokens on every .NET version and platform, which
/// <see cref="Random"/> does not promise. Not thread-safe; one per sequence.
/// </summary>
public sealed class Xoshiro256StarStar
{
    private ulong _s0, _s1, _s2, _s3;

    /// <summary>Expands the seed into the 256-bit state with SplitMix64, as the authors recommend.</summary>
    public Xoshiro256StarStar(ulong seed)
    {
        // SplitMix64 never yields four zero words, so the state is never the one fixed point of xoshiro.
        var splitMix = seed;
        _s0 = SplitMix64(ref splitMix);
        _s1 = SplitMix64(ref splitMix);
        _s2 = SplitMix64(ref splitMix);
        _s3 = SplitMix64(ref splitMix);
    }

    /// <summary>The next 64 uniformly distributed bits.</summary>
    public ulong NextUInt64()
    {
        var result = ulong.RotateLeft(_s1 * 5, 7) * 9;
        var t = _s1 << 17;
        _s2 ^= _s0;
        _s3 ^= _s1;
        _s1 ^= _s2;
        _s0 ^= _s3;
        _s2 ^= t;
        _s3 = ulong.RotateLeft(_s3, 45);
        return result;
    }

    /// <summary>A uniform double in [0, 1) from the top 53 bits of one <see cref="NextUInt64"/>.</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    private static ulong SplitMix64(ref ulong state)
    {
        var z = state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
