using System.Text.Json;
using System.Text.RegularExpressions;
using InferenceServer.LoadGenerator.Measurement;
using InferenceServer.LoadGenerator.Reports;
using InferenceServer.Tests;

namespace InferenceServer.LoadGenerator.Tests;

public sealed partial class ReportTests
{
    [Fact]
    public void The_html_report_is_one_offline_page_with_both_charts()
    {
        var html = HtmlReport.Render(SampleReport());

        Assert.StartsWith("<!DOCTYPE html>", html, StringComparison.Ordinal);
        foreach (var id in new[] { "chart-latency-throughput", "chart-ttft" })
        {
            var svg = Regex.Match(html, $"<svg id=\"{id}\".*?</svg>", RegexOptions.Singleline);
            Assert.True(svg.Success, $"no <svg id=\"{id}\">");
            Assert.Contains("<title>", svg.Value, StringComparison.Ordinal);
            Assert.DoesNotContain("no data", svg.Value, StringComparison.Ordinal);
        }
        // One polyline per sweep, one bar per non-empty bin.
        Assert.Equal(2, Regex.Count(html, "<polyline"));
        Assert.Equal(3, Regex.Count(html, "<rect x=\"[^\"]+\" y=\"[^\"]+\" width=\"[^\"]+\" height=\"[^\"]+\" fill=\"#1f77b4\"><title>"));
        // Nothing is fetched: no scripts, stylesheets, images or links to anything outside the file.
        Assert.False(ExternalReference().IsMatch(html), ExternalReference().Match(html).Value);
        Assert.DoesNotContain("<script", html, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("<link", html, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("@import", html, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("url(", html, StringComparison.OrdinalIgnoreCase);
        // Text from the runs is escaped.
        Assert.Contains("gRPC &lt;sweep&gt;", html, StringComparison.Ordinal);
    }

    [Fact]
    public void Markdown_and_json_carry_the_figures()
    {
        using var temp = new TempFolder();
        var report = SampleReport();
        Benchmark.Write(report, temp.Path);
        Assert.Equal(["report.html", "report.json", "report.md"], Directory.GetFiles(temp.Path).Select(Path.GetFileName).Order(StringComparer.Ordinal));

        var markdown = File.ReadAllText(temp.Combine("report.md"));
        Assert.Contains("| 4 streams | 40 | 39 | 0 | 1 | 40.0 / 80.0 / 99.0 | 12.00 / 14.00 / 20.00 |", markdown, StringComparison.Ordinal);
        Assert.Contains("4 streams: errors grpc:RESOURCE_EXHAUSTED x1", markdown, StringComparison.Ordinal);
        Assert.Contains("| gRPC <sweep> | 10.00 | 2.50 | 4.00x |", markdown, StringComparison.Ordinal);

        using var json = JsonDocument.Parse(File.ReadAllText(temp.Combine("report.json")));
        var root = json.RootElement;
        Assert.Equal("grpc", root.GetProperty("target_kind").GetString());
        Assert.Equal("AMD Test CPU", root.GetProperty("environment").GetProperty("cpu_model").GetString());
        var level = root.GetProperty("runs")[0].GetProperty("levels")[1];
        Assert.Equal(1, level.GetProperty("errors_by_status").GetProperty("grpc:RESOURCE_EXHAUSTED").GetInt32());
        Assert.Equal(80, level.GetProperty("time_to_first_token_ms").GetProperty("p90").GetDouble());
        Assert.Equal(4.0, root.GetProperty("serving_overhead")[0].GetProperty("ratio").GetDouble());
    }

    [Fact]
    public void Serving_overhead_divides_the_one_stream_inter_token_latency_by_the_bare_step()
    {
        var report = SampleReport();
        report.ServingOverhead.Clear();
        var overheads = Benchmark.ServingOverheads(report).ToArray();
        Assert.Equal(["gRPC <sweep>", "in-process engine concurrency (reference)"], overheads.Select(o => o.Run));
        Assert.Equal(10 / 2.5, overheads[0].Ratio, 9);
        Assert.Equal(8 / 2.5, overheads[1].Ratio, 9);
        report.Runner = null;
        Assert.Empty(Benchmark.ServingOverheads(report));
    }

    [Fact]
    public void Charts_say_so_when_there_is_nothing_to_draw()
    {
        var report = SampleReport() with { Runs = [] };
        Assert.Contains("no data", SvgCharts.LatencyThroughput(report), StringComparison.Ordinal);
        Assert.Contains("no data", SvgCharts.TimeToFirstToken(report), StringComparison.Ordinal);
    }

    [GeneratedRegex("""(src|href|xlink:href|action)\s*=\s*["']?\s*(https?:|//|[a-z0-9._-]+\.(js|css|png|svg|woff2?)\b)""", RegexOptions.IgnoreCase)]
    private static partial Regex ExternalReference();

    private static Distribution D(double p50, double p90, double p99) => new() { Count = 10, Mean = p50, Min = p50 / 2, Max = p99, P50 = p50, P90 = p90, P99 = p99 };

    internal static BenchmarkReport SampleReport()
    {
        var report = new BenchmarkReport
        {
            Started = new DateTimeOffset(2025, 1, 2, 3, 4, 5, TimeSpan.Zero),
            Environment = new EnvironmentInfo { CpuModel = "AMD Test CPU", Cores = 2, Os = "Linux", Dotnet = ".NET 10", GitCommit = "abc1234", CommandLine = "suite" },
            Target = "grpc://127.0.0.1:50051",
            TargetKind = "grpc",
            Model = "tiny",
            Parameters = new WorkloadParameters { Workload = "concurrency", Levels = [1, 4], PromptTokens = 128, OutputTokens = 64, DurationSeconds = 20 },
        };
        report.Runs.Add(new RunReport
        {
            Name = "gRPC <sweep>",
            Target = "http://127.0.0.1:50051/",
            TargetKind = "grpc",
            Workload = "concurrency",
            Levels =
            [
                new LevelReport { Label = "1 stream", Value = 1, Requests = 10, Completed = 10, TimeToFirstTokenMs = D(20, 30, 35), InterTokenMs = D(10, 11, 12), EndToEndMs = D(600, 650, 700), OutputTokensPerSecond = 95, RequestsPerSecond = 1.5 },
                new LevelReport
                {
                    Label = "4 streams", Value = 4, Requests = 40, Completed = 39, Failed = 1, ErrorsByStatus = new() { ["grpc:RESOURCE_EXHAUSTED"] = 1 },
                    FirstError = "grpc:RESOURCE_EXHAUSTED: queue full", TimeToFirstTokenMs = D(40, 80, 99), InterTokenMs = D(12, 14, 20), EndToEndMs = D(800, 900, 1000),
                    OutputTokensPerSecond = 310, RequestsPerSecond = 4.8, PrefixCacheShare = 0.01,
                },
            ],
            TimeToFirstTokenHistogram = new Histogram { Start = 0, BinWidth = 10, Counts = [0, 3, 20, 0, 26], Total = 49, Unit = "ms" },
        });
        report.Runs.Add(new RunReport
        {
            Name = "in-process engine concurrency (reference)",
            Target = "/models/tiny",
            TargetKind = "inprocess",
            Workload = "concurrency",
            Reference = true,
            Levels = [new LevelReport { Label = "1 stream", Value = 1, Requests = 12, Completed = 12, InterTokenMs = D(8, 9, 10), OutputTokensPerSecond = 120 }],
        });
        report.Runner = new RunnerReport { ModelPath = "/models/tiny", PromptTokens = 128, Levels = [new RunnerLevel { Batch = 1, Steps = 500, StepMs = D(2.5, 2.7, 3), TokensPerSecond = 400 }] };
        report.ServingOverhead.AddRange(Benchmark.ServingOverheads(report).Take(1));
        return report;
    }
}
