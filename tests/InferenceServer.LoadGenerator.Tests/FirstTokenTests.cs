using System.Text.Json;
using InferenceServer.LoadGenerator.Measurement;
using InferenceServer.LoadGenerator.Reports;
using InferenceServer.LoadGenerator.Scenarios;
using InferenceServer.Tests;

namespace InferenceServer.LoadGenerator.Tests;

/// <summary>
/// Requests cancelled after their first token (most of the IDE workload) count in TTFT and ITL;
/// those cancelled before any token do not, and the report says how many of each there were.
/// </summary>
public sealed class FirstTokenTests
{
    private static RequestRecord[] Records() =>
    [
        // Completed: first token at 10 ms, 10 more tokens by 20 ms (ITL 1 ms).
        new() { Outcome = RequestOutcome.Completed, TimeToFirstTokenMs = 10, LastTokenMs = 20, EndMs = 21, OutputTokens = 11, FirstEventTokens = 1 },
        // Cancelled by the next keystroke after 4 tokens: first at 100 ms, the other 3 by 130 ms (ITL 10 ms).
        new() { Outcome = RequestOutcome.Cancelled, TimeToFirstTokenMs = 100, LastTokenMs = 130, EndMs = 140, OutputTokens = 4, FirstEventTokens = 1, CancelToReturnMs = 0.5 },
        // Cancelled after a single token: a TTFT, no ITL.
        new() { Outcome = RequestOutcome.Cancelled, TimeToFirstTokenMs = 40, LastTokenMs = 40, EndMs = 60, OutputTokens = 1, FirstEventTokens = 1, CancelToReturnMs = 0.5 },
        // Cancelled before any token.
        new() { Outcome = RequestOutcome.Cancelled, EndMs = 5, CancelToReturnMs = 0.5 },
        // A failure after a first token stays out of the latency figures.
        new() { Outcome = RequestOutcome.Failed, TimeToFirstTokenMs = 1000, LastTokenMs = 2000, EndMs = 2001, OutputTokens = 3, FirstEventTokens = 1, ErrorKey = "http:500", ErrorMessage = "boom" },
    ];

    private static LevelReport Level() => LevelSummary.Build("4 sessions", 4, Records(), TimeSpan.FromSeconds(1), "n/a", null, null, null);

    [Fact]
    public void Time_to_first_token_covers_requests_cancelled_after_their_first_token()
    {
        var ttft = Level().TimeToFirstTokenMs!;

        // 10 (completed), 40 and 100 (cancelled after their first token); not 1000 (failed).
        Assert.Equal(new double[] { 3, 10, 40, 50, 100 }, new[] { ttft.Count, ttft.Min, ttft.P50, ttft.Mean, ttft.Max });
    }

    [Fact]
    public void Inter_token_latency_includes_the_gaps_a_cancelled_request_saw()
    {
        var level = Level();

        // 1 ms (completed) and 10 ms (cancelled after 4 tokens); the single-token one has no gaps.
        Assert.Equal(new double[] { 2, 1, 10 }, new[] { level.InterTokenMs!.Count, level.InterTokenMs.Min, level.InterTokenMs.Max });
        // End-to-end stays over completed requests: a cancelled one ends when the client gives up.
        Assert.Equal(1, level.EndToEndMs!.Count);
    }

    [Fact]
    public void Cancelled_requests_are_split_by_whether_a_first_token_came_first()
    {
        var level = Level();

        Assert.Equal(3, level.Cancelled);
        Assert.Equal(2, level.CancelledAfterFirstToken);
        Assert.Equal(1, level.CancelledBeforeFirstToken);
        Assert.Equal(3, level.Cancellation!.ClientCancelled);
    }

    [Fact]
    public void A_level_cancelled_before_every_first_token_has_no_latency_figures()
    {
        RequestRecord[] records = [new() { Outcome = RequestOutcome.Cancelled, EndMs = 5 }, new() { Outcome = RequestOutcome.Cancelled, EndMs = 7 }];
        var level = LevelSummary.Build("1 session", 1, records, TimeSpan.FromSeconds(1), "n/a", null, null, null);

        Assert.Null(level.TimeToFirstTokenMs);
        Assert.Null(level.InterTokenMs);
        Assert.Equal(0, level.CancelledAfterFirstToken);
        Assert.Equal(2, level.CancelledBeforeFirstToken);
        Assert.Null(LevelRunner.TimeToFirstToken(records));
    }

    [Fact]
    public void The_time_to_first_token_chart_counts_the_same_requests()
    {
        var histogram = LevelRunner.TimeToFirstToken(Records())!;

        Assert.Equal(3, histogram.Total);
        Assert.Equal(3, histogram.Counts.Sum());
    }

    [Fact]
    public void Tokens_read_after_the_cancellation_are_not_counted()
    {
        using var source = new CancellationTokenSource();
        using var timer = new ResponseTimer(source.Token);
        timer.Tokens(2);
        timer.Tokens(1);
        source.Cancel();
        timer.Tokens(5);

        var record = timer.Cancelled();

        Assert.Equal(RequestOutcome.Cancelled, record.Outcome);
        Assert.NotNull(record.TimeToFirstTokenMs);
        Assert.Equal(3, record.OutputTokens);
        Assert.Equal(2, record.FirstEventTokens);
    }

    [Fact]
    public void A_request_cancelled_before_its_first_token_has_none()
    {
        using var source = new CancellationTokenSource();
        using var timer = new ResponseTimer(source.Token);
        source.Cancel();
        timer.Tokens(4);

        var record = timer.Cancelled();

        Assert.Null(record.TimeToFirstTokenMs);
        Assert.Null(record.InterTokenMs);
        Assert.Equal(0, record.OutputTokens);
    }

    [Fact]
    public void The_engines_iteration_times_are_summarized_and_reported_where_seen()
    {
        using var temp = new TempFolder();
        var level = LevelSummary.Build("4 sessions", 4, Records(), TimeSpan.FromSeconds(1), "meter", null, null, null, iterationMs: [5, 10, 20, 40]);
        Assert.Equal(4, level.IterationMs!.Count);
        Assert.Equal(40, level.IterationMs.Max);
        var report = ReportTests.SampleReport();
        report.Runs.Add(new RunReport { Name = "IDE typing", Target = "inprocess", TargetKind = "inprocess", Workload = "ide", Levels = [level] });
        Benchmark.Write(report, temp.Path);

        var markdown = File.ReadAllText(temp.Combine("report.md"));
        Assert.Contains("4 sessions: engine iterations p50 / p90 / p99 ", markdown, StringComparison.Ordinal);
        Assert.Contains("longest 40.0 ms (4 iterations)", markdown, StringComparison.Ordinal);
        // Without the engine in this process there is nothing to say.
        Assert.Null(Level().IterationMs);
    }

    [Fact]
    public void The_reports_show_how_many_cancelled_requests_got_a_first_token()
    {
        using var temp = new TempFolder();
        var report = ReportTests.SampleReport();
        report.Runs.Add(new RunReport { Name = "IDE typing", Target = "inprocess", TargetKind = "inprocess", Workload = "ide", Levels = [Level()] });
        Benchmark.Write(report, temp.Path);

        var markdown = File.ReadAllText(temp.Combine("report.md"));
        Assert.Contains("| level | requests | ok | cancelled (after / before 1st token) | failed |", markdown, StringComparison.Ordinal);
        Assert.Contains("| 4 sessions | 5 | 1 | 3 (2 / 1) | 1 |", markdown, StringComparison.Ordinal);
        Assert.Contains("4 sessions: 2 of 3 cancelled requests got a first token before their cancellation, 1 were cancelled before any; TTFT and ITL cover the 3 requests", markdown, StringComparison.Ordinal);
        // Levels without cancellations keep a plain count and no such line.
        Assert.Contains("| 1 stream | 10 | 10 | 0 | 0 |", markdown, StringComparison.Ordinal);
        Assert.DoesNotContain("1 stream: 0 of", markdown, StringComparison.Ordinal);

        var html = File.ReadAllText(temp.Combine("report.html"));
        Assert.Contains("<th>cancelled (after / before 1st token)</th>", html, StringComparison.Ordinal);
        Assert.Contains("<td>3 (2 / 1)</td>", html, StringComparison.Ordinal);

        using var json = JsonDocument.Parse(File.ReadAllText(temp.Combine("report.json")));
        var level = json.RootElement.GetProperty("runs")[2].GetProperty("levels")[0];
        Assert.Equal(3, level.GetProperty("cancelled").GetInt32());
        Assert.Equal(2, level.GetProperty("cancelled_after_first_token").GetInt32());
        Assert.Equal(1, level.GetProperty("cancelled_before_first_token").GetInt32());
        Assert.Equal(3, level.GetProperty("time_to_first_token_ms").GetProperty("count").GetInt32());
    }
}
