namespace InferenceServer.LoadGenerator.Scenarios;

/// <summary>
/// Arrival times of a Poisson process: exponential gaps with mean 1/rate, from a seeded generator,
/// so the same seed gives the same schedule.
/// </summary>
public static class PoissonArrivals
{
    /// <summary>Offsets from the start of every arrival before <paramref name="duration"/>, in order.</summary>
    public static IEnumerable<TimeSpan> Schedule(double ratePerSecond, TimeSpan duration, int seed)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(ratePerSecond);
        var random = new Random(seed);
        var seconds = 0.0;
        while (true)
        {
            // Inverse transform: -ln(U) / rate with U in (0, 1].
            seconds += -Math.Log(1.0 - random.NextDouble()) / ratePerSecond;
            if (seconds >= duration.TotalSeconds)
                yield break;
            yield return TimeSpan.FromSeconds(seconds);
        }
    }
}
