namespace InferenceServer.LoadGenerator.Measurement;

/// <summary>Percentiles of a sample, by linear interpolation between the closest ranks (numpy's default).</summary>
public static class Percentiles
{
    /// <summary>
    /// The <paramref name="percentile"/>-th percentile (0..100) of <paramref name="sorted"/>, which
    /// must be in ascending order: the value at rank p/100 * (n - 1), interpolated between neighbours.
    /// </summary>
    public static double Of(ReadOnlySpan<double> sorted, double percentile)
    {
        if (sorted.IsEmpty)
            throw new ArgumentException("no samples", nameof(sorted));
        ArgumentOutOfRangeException.ThrowIfLessThan(percentile, 0);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(percentile, 100);
        var rank = percentile / 100 * (sorted.Length - 1);
        var below = (int)Math.Floor(rank);
        var above = Math.Min(below + 1, sorted.Length - 1);
        var fraction = rank - below;
        return sorted[below] + (sorted[above] - sorted[below]) * fraction;
    }

    /// <summary>Count, mean, min, max, p50, p90 and p99 of the samples; null when there are none.</summary>
    public static Distribution? Summarize(IEnumerable<double> samples)
    {
        ArgumentNullException.ThrowIfNull(samples);
        var sorted = samples.Where(double.IsFinite).ToArray();
        if (sorted.Length == 0)
            return null;
        Array.Sort(sorted);
        return new Distribution
        {
            Count = sorted.Length,
            Mean = sorted.Average(),
            Min = sorted[0],
            Max = sorted[^1],
            P50 = Of(sorted, 50),
            P90 = Of(sorted, 90),
            P99 = Of(sorted, 99),
        };
    }
}

/// <summary>A summary of one measured quantity (milliseconds unless the name says otherwise).</summary>
public sealed record Distribution
{
    public int Count { get; init; }
    public double Mean { get; init; }
    public double Min { get; init; }
    public double Max { get; init; }
    public double P50 { get; init; }
    public double P90 { get; init; }
    public double P99 { get; init; }
}
