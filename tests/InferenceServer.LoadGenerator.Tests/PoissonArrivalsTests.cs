using InferenceServer.LoadGenerator.Scenarios;

namespace InferenceServer.LoadGenerator.Tests;

public sealed class PoissonArrivalsTests
{
    [Fact]
    public void The_same_seed_gives_the_same_schedule_and_another_seed_another()
    {
        var a = PoissonArrivals.Schedule(4, TimeSpan.FromSeconds(30), seed: 7).ToArray();
        var b = PoissonArrivals.Schedule(4, TimeSpan.FromSeconds(30), seed: 7).ToArray();
        var c = PoissonArrivals.Schedule(4, TimeSpan.FromSeconds(30), seed: 8).ToArray();
        Assert.Equal(a, b);
        Assert.NotEqual(a, c);
        Assert.True(a.Zip(a.Skip(1)).All(pair => pair.First <= pair.Second), "arrivals are in order");
        Assert.True(a[^1] < TimeSpan.FromSeconds(30));
    }

    [Fact]
    public void The_mean_rate_and_the_spread_of_gaps_are_those_of_a_Poisson_process()
    {
        // 2 req/s over 5,000 s: about 10,000 arrivals, whose count has a standard deviation of 100.
        const double Rate = 2;
        var arrivals = PoissonArrivals.Schedule(Rate, TimeSpan.FromSeconds(5000), seed: 1).ToArray();
        Assert.InRange(arrivals.Length / 5000.0, Rate * 0.96, Rate * 1.04);
        var gaps = arrivals.Zip(arrivals.Skip(1), (a, b) => (b - a).TotalSeconds).ToArray();
        var mean = gaps.Average();
        var deviation = Math.Sqrt(gaps.Sum(g => (g - mean) * (g - mean)) / gaps.Length);
        // Exponential gaps: the standard deviation equals the mean (a fixed interval would have none).
        Assert.InRange(mean, 0.48, 0.52);
        Assert.InRange(deviation / mean, 0.95, 1.05);
    }
}
