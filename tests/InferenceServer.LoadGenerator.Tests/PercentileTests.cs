using InferenceServer.LoadGenerator.Measurement;
using InferenceServer.LoadGenerator.Reports;

namespace InferenceServer.LoadGenerator.Tests;

public sealed class PercentileTests
{
    [Fact]
    public void Interpolates_between_the_closest_ranks()
    {
        double[] sorted = [10, 20, 30, 40];
        Assert.Equal(10, Percentiles.Of(sorted, 0));
        Assert.Equal(40, Percentiles.Of(sorted, 100));
        // Rank 0.5 * 3 = 1.5: halfway between 20 and 30.
        Assert.Equal(25, Percentiles.Of(sorted, 50), 9);
        // Rank 0.9 * 3 = 2.7: 30 + 0.7 * 10.
        Assert.Equal(37, Percentiles.Of(sorted, 90), 9);
        Assert.Equal(39.7, Percentiles.Of(sorted, 99), 9);
    }

    [Fact]
    public void One_sample_is_every_percentile()
    {
        double[] sorted = [7];
        Assert.Equal(7, Percentiles.Of(sorted, 0));
        Assert.Equal(7, Percentiles.Of(sorted, 50));
        Assert.Equal(7, Percentiles.Of(sorted, 99));
    }

    [Fact]
    public void Summary_sorts_and_matches_the_uniform_ranks_of_1_to_100()
    {
        var shuffled = Enumerable.Range(1, 100).Select(i => (double)i).OrderBy(i => (i * 37) % 101).ToArray();
        var summary = Percentiles.Summarize(shuffled)!;
        Assert.Equal(100, summary.Count);
        Assert.Equal(1, summary.Min);
        Assert.Equal(100, summary.Max);
        Assert.Equal(50.5, summary.Mean, 9);
        Assert.Equal(50.5, summary.P50, 9);
        Assert.Equal(90.1, summary.P90, 9);
        Assert.Equal(99.01, summary.P99, 9);
    }

    [Fact]
    public void No_samples_is_no_summary_and_non_finite_samples_are_ignored()
    {
        Assert.Null(Percentiles.Summarize([]));
        Assert.Null(Percentiles.Summarize([double.NaN]));
        Assert.Equal(1, Percentiles.Summarize([double.NaN, 3, double.PositiveInfinity])!.Count);
        Assert.Throws<ArgumentException>(() => Percentiles.Of([], 50));
        Assert.Throws<ArgumentOutOfRangeException>(() => Percentiles.Of([1.0], 101));
    }

    [Fact]
    public void Inter_token_latency_is_the_decode_time_over_the_tokens_after_the_first_event()
    {
        var record = new RequestRecord { Outcome = RequestOutcome.Completed, TimeToFirstTokenMs = 100, LastTokenMs = 190, OutputTokens = 10, FirstEventTokens = 1 };
        Assert.Equal(10, record.InterTokenMs!.Value, 9);
        // Two tokens arrived together first: the remaining 8 took the 90 ms.
        Assert.Equal(11.25, (record with { FirstEventTokens = 2 }).InterTokenMs!.Value, 9);
        Assert.Null((record with { OutputTokens = 1 }).InterTokenMs);
    }

    [Fact]
    public void Level_summary_counts_outcomes_errors_and_the_cache_share()
    {
        RequestRecord[] records =
        [
            new() { Outcome = RequestOutcome.Completed, TimeToFirstTokenMs = 10, LastTokenMs = 20, EndMs = 21, OutputTokens = 11, FirstEventTokens = 1, PromptTokens = 100, CachedPromptTokens = 80 },
            new() { Outcome = RequestOutcome.Completed, TimeToFirstTokenMs = 30, LastTokenMs = 50, EndMs = 51, OutputTokens = 11, FirstEventTokens = 1, PromptTokens = 100, CachedPromptTokens = 0 },
            new() { Outcome = RequestOutcome.Cancelled, EndMs = 5, OutputTokens = 2, CancelToReturnMs = 1.5 },
            new() { Outcome = RequestOutcome.Failed, EndMs = 1, ErrorKey = "http:429", ErrorMessage = "busy" },
            new() { Outcome = RequestOutcome.Failed, EndMs = 1, ErrorKey = "http:429", ErrorMessage = "busy" },
        ];
        var level = LevelSummary.Build("2 streams", 2, records, TimeSpan.FromSeconds(2), "admin",
            new EngineCounts(100, 10, 0, 0, 0, InterruptedPrefills: 2), new EngineCounts(150, 14, 1, 0, 0, InterruptedPrefills: 5), null);
        Assert.Equal(5, level.Requests);
        Assert.Equal(3, level.InterruptedPrefills);
        Assert.Equal(2, level.Completed);
        Assert.Equal(1, level.Cancelled);
        Assert.Equal(2, level.Failed);
        Assert.Equal(2, level.ErrorsByStatus["http:429"]);
        Assert.Equal(0.4, level.PrefixCacheShare!.Value, 9);
        // 11 + 11 + 2 delivered tokens over 2 s.
        Assert.Equal(12, level.OutputTokensPerSecond, 9);
        Assert.Equal(1, level.RequestsPerSecond, 9);
        Assert.Equal(20, level.TimeToFirstTokenMs!.P50, 9);
        Assert.Equal(4, level.Cancellation!.ServerCancellations);
        Assert.Equal(0.75, level.Cancellation.FreedWithinOneIterationShare!.Value, 9);
        Assert.Equal(40, level.Cancellation.MeanIterationMs!.Value, 9);
        Assert.Equal("75% of 4 within 1 iteration (~40.0 ms)", ReportTables.CancelToFree(level));
    }

    [Fact]
    public void Admin_counts_are_read_with_and_without_the_interrupted_prefills_field()
    {
        using var current = System.Text.Json.JsonDocument.Parse("""{"iterations": 9, "cancellations": 3, "late_cancellations": 1, "running": 2, "waiting": 1, "interrupted_prefills": 4}""");
        Assert.Equal(new EngineCounts(9, 3, 1, 2, 1, InterruptedPrefills: 4), AdminEndpointCounters.Parse(current.RootElement));
        // A server from before the field: none counted.
        using var older = System.Text.Json.JsonDocument.Parse("""{"iterations": 9, "cancellations": 3, "late_cancellations": 1}""");
        Assert.Equal(new EngineCounts(9, 3, 1, 0, 0), AdminEndpointCounters.Parse(older.RootElement));
        using var foreign = System.Text.Json.JsonDocument.Parse("""{"status": "ok"}""");
        Assert.Null(AdminEndpointCounters.Parse(foreign.RootElement));
    }

    [Fact]
    public void Histogram_bins_up_to_the_99th_percentile_and_keeps_the_rest_in_the_last_bin()
    {
        var samples = Enumerable.Range(0, 1000).Select(i => i / 10.0).Append(10_000).ToArray();
        var histogram = Histogram.Of(samples, 10, "ms")!;
        Assert.Equal(samples.Length, histogram.Counts.Sum());
        Assert.Equal(10, histogram.BinWidth);
        Assert.Equal(101, histogram.Counts[^1]);
        Assert.Equal([1, 2, 5, 10, 0.2], new[] { 0.7, 2, 3, 6, 0.15 }.Select(Histogram.NiceStep));
    }
}
