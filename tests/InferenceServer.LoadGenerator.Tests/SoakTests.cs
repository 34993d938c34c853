using System.Text.Json;
using InferenceServer.LoadGenerator.Measurement;
using InferenceServer.LoadGenerator.Soak;
using InferenceServer.Tests;

namespace InferenceServer.LoadGenerator.Tests;

public sealed class SoakTests(ServerFixture fixture) : IClassFixture<ServerFixture>
{
    [Fact]
    public async Task A_short_soak_against_a_running_server_answers_every_request_and_leaves_the_engine_idle()
    {
        using var sources = new SourceFiles();
        using var temp = new TempFolder();
        var settings = new SoakSettings
        {
            Target = fixture.Server.HttpAddress,
            Grpc = fixture.Server.GrpcAddress,
            // The server runs in this process: its RSS is this test host's, read the same way.
            Pid = Environment.ProcessId,
            Model = fixture.ModelPath,
            Manifest = sources.ManifestPath,
            Out = temp.Path,
            Duration = TimeSpan.FromSeconds(3),
            CancelFraction = 0.5,
            PromptTokens = 32,
            OutputTokens = 16,
            SampleInterval = TimeSpan.FromSeconds(1),
            // The test host's memory moves with everything else it runs: only the figures are checked here.
            MaxRssGrowthPercent = 1000,
        };
        var (report, folder) = await SoakRun.RunAsync(settings, ["soak"], TextWriter.Null, CancellationToken.None);

        Assert.True(report.Passed, string.Join("; ", report.Problems));
        Assert.Equal(8, report.Concurrency); // twice the fixture's max batch of 4
        var total = report.Total;
        Assert.True(total.Sent > 0 && total.Completed > 0 && total.Cancelled > 0, $"{total}");
        Assert.Equal(total.Sent, total.Completed + total.Cancelled + total.Rejected + total.Failed + total.Lost);
        Assert.Equal(0, total.Lost);
        Assert.Equal(0, total.Failed);
        Assert.Equal(4, report.ByKind.Count);
        Assert.True(report.EndEngine is { Idle: true }, $"{report.EndEngine}");
        Assert.NotNull(report.Rss);
        Assert.True(report.Samples.Count >= 3);
        using var json = JsonDocument.Parse(await File.ReadAllTextAsync(Path.Combine(folder, "soak.json")));
        Assert.True(json.RootElement.GetProperty("passed").GetBoolean());
        Assert.Contains("# Soak: passed", await File.ReadAllTextAsync(Path.Combine(folder, "soak.md")), StringComparison.Ordinal);
    }

    [Fact]
    public void The_checks_fail_on_lost_requests_blocks_left_in_use_and_memory_growth()
    {
        var idle = new EngineSample(0, 0, 0, 12, 100);
        Assert.Empty(SoakReport.Check(new SoakCounts { Sent = 5, Completed = 5 }, idle, Rss(100, 109), 10));
        Assert.Contains("2 requests lost", Assert.Single(SoakReport.Check(new SoakCounts { Sent = 5, Lost = 2 }, idle, null, 10)), StringComparison.Ordinal);
        Assert.Contains("3 KV blocks still in use", Assert.Single(SoakReport.Check(new SoakCounts(), idle with { KvBlocksUsed = 3 }, null, 10)), StringComparison.Ordinal);
        Assert.Contains("1 running and 2 waiting", Assert.Single(SoakReport.Check(new SoakCounts(), idle with { Running = 1, Waiting = 2 }, null, 10)), StringComparison.Ordinal);
        Assert.Contains("RSS grew 11.0%", Assert.Single(SoakReport.Check(new SoakCounts(), idle, Rss(100, 111), 10)), StringComparison.Ordinal);
        Assert.Contains("did not answer", Assert.Single(SoakReport.Check(new SoakCounts(), null, null, 10)), StringComparison.Ordinal);
    }

    [Fact]
    public void The_rss_baseline_is_the_first_sample_after_warm_up()
    {
        SoakSample[] samples =
        [
            new() { Seconds = 0, RssKb = 50 }, new() { Seconds = 5, RssKb = 90 }, new() { Seconds = 10, RssKb = 100 },
            new() { Seconds = 15 }, new() { Seconds = 20, RssKb = 130 }, new() { Seconds = 21, RssKb = 120 },
        ];
        var rss = SoakReport.RssOf(samples, warmupSeconds: 8)!;
        Assert.Equal((10, 100, 120, 130), (rss.WarmupSeconds, rss.WarmupKb, rss.EndKb, rss.PeakKb));
        Assert.Equal(20, rss.ChangePercent, 6);
        Assert.Null(SoakReport.RssOf([new() { Seconds = 0 }, new() { Seconds = 1, RssKb = 5 }], 0));
    }

    [Fact]
    public void Outcomes_are_tallied_as_completed_cancelled_rejected_failed_or_lost()
    {
        var tally = new SoakTally();
        foreach (var (outcome, key) in new (RequestOutcome, string?)[]
        {
            (RequestOutcome.Completed, null), (RequestOutcome.Cancelled, null), (RequestOutcome.Failed, "http:429"),
            (RequestOutcome.Failed, "grpc:RESOURCE_EXHAUSTED"), (RequestOutcome.Failed, "http:500"), (RequestOutcome.Failed, "stream:truncated"),
        })
        {
            tally.Sent("http", cancelScheduled: outcome == RequestOutcome.Cancelled);
            tally.Ended("http", new RequestRecord { Outcome = outcome, ErrorKey = key, ErrorMessage = key });
        }
        tally.Sent("grpc", cancelScheduled: false);
        tally.Abandoned("grpc");
        var total = tally.Total();
        Assert.Equal((7L, 1L, 1L, 1L, 2L, 1L, 2L), (total.Sent, total.Completed, total.CancelsScheduled, total.Cancelled, total.Rejected, total.Failed, total.Lost));
        Assert.Equal(1, tally.Failures()["http:500"]);
        Assert.Equal(1, tally.ByKind()["grpc"].Lost);
    }

    [Theory]
    [InlineData("90", 90)]
    [InlineData("90s", 90)]
    [InlineData("10m", 600)]
    [InlineData("0.5h", 1800)]
    public void Durations_take_a_unit(string text, double seconds) => Assert.Equal(seconds, SoakSettings.ParseDuration(text).TotalSeconds);

    [Theory]
    [InlineData("")]
    [InlineData("0")]
    [InlineData("10d")]
    [InlineData("m")]
    public void Bad_durations_are_refused(string text) => Assert.Throws<ArgumentException>(() => SoakSettings.ParseDuration(text));

    [Fact]
    public void VmRSS_lines_are_read_in_kilobytes()
    {
        Assert.Equal(123456, ProcessMemory.ParseKilobytes("VmRSS:\t  123456 kB"));
        Assert.Null(ProcessMemory.ParseKilobytes("VmRSS:"));
        Assert.NotNull(ProcessMemory.ResidentKilobytes(Environment.ProcessId));
    }

    private static RssFigures Rss(long warm, long end) => new() { WarmupKb = warm, EndKb = end, PeakKb = end, ChangePercent = 100.0 * (end - warm) / warm };
}
