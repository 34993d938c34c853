using System.Globalization;
using System.Text;
using System.Text.Json.Serialization;
using InferenceServer.LoadGenerator.Reports;

namespace InferenceServer.LoadGenerator.Soak;

/// <summary>One sample of the server during the soak.</summary>
public sealed record SoakSample
{
    /// <summary>Seconds since the load started.</summary>
    public double Seconds { get; init; }

    /// <summary>The server's VmRSS in kB; null when no process is watched.</summary>
    public long? RssKb { get; init; }

    /// <summary>GET /admin/engine; null when it did not answer.</summary>
    public EngineSample? Engine { get; init; }

    /// <summary>Requests the load generator had sent and not yet seen end.</summary>
    public int ClientInFlight { get; init; }
}

/// <summary>The server's resident memory after warm-up and at the end.</summary>
public sealed record RssFigures
{
    public double WarmupSeconds { get; init; }
    public long WarmupKb { get; init; }
    public long EndKb { get; init; }
    public long PeakKb { get; init; }
    public double ChangePercent { get; init; }
}

/// <summary>What a soak run measured: soak.json holds it, soak.md shows it.</summary>
public sealed record SoakReport
{
    public required DateTimeOffset Started { get; init; }
    public required EnvironmentInfo Environment { get; init; }
    public required string Server { get; init; }
    public int? ServerPid { get; init; }
    public required string Model { get; init; }
    public required int Concurrency { get; init; }
    public int? ServerMaxBatch { get; init; }
    public required double DurationSeconds { get; init; }
    public required double CancelFraction { get; init; }
    public required IReadOnlyList<string> Mix { get; init; }
    public int PromptTokens { get; init; }
    public int OutputTokens { get; init; }
    public int Seed { get; init; }
    public required SoakCounts Total { get; init; }
    public required IReadOnlyDictionary<string, SoakCounts> ByKind { get; init; }

    /// <summary>Every error status, rejections and incomplete answers included.</summary>
    public required IReadOnlyDictionary<string, long> Errors { get; init; }

    public required IReadOnlyDictionary<string, string> ErrorMessages { get; init; }

    /// <summary>The engine after the last request and the wait for it to go idle; null when it did not answer.</summary>
    public EngineSample? EndEngine { get; init; }

    public double IdleAfterSeconds { get; init; }
    public RssFigures? Rss { get; init; }
    public double MaxRssGrowthPercent { get; init; }
    public required IReadOnlyList<SoakSample> Samples { get; init; }

    /// <summary>Why the soak failed; empty when it passed.</summary>
    public required IReadOnlyList<string> Problems { get; init; }

    public bool Passed => Problems.Count == 0;

    /// <summary>The reasons a soak fails: lost requests, anything still held at the end, memory that grew.</summary>
    public static List<string> Check(SoakCounts total, EngineSample? end, RssFigures? rss, double maxRssGrowthPercent)
    {
        ArgumentNullException.ThrowIfNull(total);
        var problems = new List<string>();
        if (total.Lost > 0)
            problems.Add($"{total.Lost} requests lost (sent, but no final answer and no error came back)");
        if (end is null)
        {
            problems.Add("GET /admin/engine did not answer at the end");
        }
        else
        {
            if (end.KvBlocksUsed > 0)
                problems.Add($"{end.KvBlocksUsed} KV blocks still in use at the end");
            if (end.Running > 0 || end.Waiting > 0)
                problems.Add($"{end.Running} running and {end.Waiting} waiting at the end");
        }
        if (rss is not null && rss.ChangePercent > maxRssGrowthPercent)
            problems.Add(string.Create(CultureInfo.InvariantCulture, $"RSS grew {rss.ChangePercent:F1}% after warm-up (limit {maxRssGrowthPercent:G}%)"));
        return problems;
    }

    /// <summary>The baseline is the first sample at or after <paramref name="warmupSeconds"/>; the end is the last sample.</summary>
    public static RssFigures? RssOf(IReadOnlyList<SoakSample> samples, double warmupSeconds)
    {
        ArgumentNullException.ThrowIfNull(samples);
        var withRss = samples.Where(s => s.RssKb is not null).ToList();
        if (withRss.Count < 2)
            return null;
        var warm = withRss.FirstOrDefault(s => s.Seconds >= warmupSeconds) ?? withRss[0];
        var end = withRss[^1];
        return new RssFigures
        {
            WarmupSeconds = warm.Seconds,
            WarmupKb = warm.RssKb!.Value,
            EndKb = end.RssKb!.Value,
            PeakKb = withRss.Max(s => s.RssKb!.Value),
            ChangePercent = 100.0 * (end.RssKb!.Value - warm.RssKb!.Value) / warm.RssKb!.Value,
        };
    }

    public string ToMarkdown()
    {
        var md = new StringBuilder();
        var c = CultureInfo.InvariantCulture;
        md.AppendLine(c, $"# Soak: {(Passed ? "passed" : "FAILED")}").AppendLine();
        md.AppendLine(c, $"{Started:yyyy-MM-dd HH:mm:ss zzz}, {Environment.CpuModel} ({Environment.Cores} cores), commit {Environment.GitCommit ?? "unknown"}.");
        md.AppendLine(c, $"Server {Server}{(ServerPid is { } pid ? $" (pid {pid})" : "")}, model {Model}; {Concurrency} requests in flight"
            + $"{(ServerMaxBatch is { } batch ? $" (max batch {batch})" : "")} for {DurationSeconds:F0} s, {CancelFraction:P0} cancelled at a random point; "
            + $"prompts of {PromptTokens} tokens, up to {OutputTokens} output tokens; mix {string.Join(", ", Mix)}; seed {Seed}.").AppendLine();
        foreach (var problem in Problems)
            md.AppendLine(c, $"- **{problem}**");
        if (Problems.Count > 0)
            md.AppendLine();

        md.AppendLine("| kind | sent | completed | cancelled (scheduled) | rejected | failed | lost |");
        md.AppendLine("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
        foreach (var (kind, counts) in ByKind.OrderBy(p => p.Key, StringComparer.Ordinal).Append(new("all", Total)))
            md.AppendLine(c, $"| {kind} | {counts.Sent} | {counts.Completed} | {counts.Cancelled} ({counts.CancelsScheduled}) | {counts.Rejected} | {counts.Failed} | {counts.Lost} |");
        md.AppendLine();
        if (Errors.Count > 0)
        {
            md.AppendLine("| error status | count | first message |");
            md.AppendLine("| --- | ---: | --- |");
            foreach (var (key, count) in Errors)
                md.AppendLine(c, $"| {key} | {count} | {ErrorMessages.GetValueOrDefault(key, "").Replace('|', '/').Replace('\n', ' ')} |");
            md.AppendLine();
        }
        md.AppendLine(EndEngine is { } e
            ? string.Create(c, $"At the end (idle after {IdleAfterSeconds:F1} s): {e.Running} running, {e.Waiting} waiting, KV blocks {e.KvBlocksUsed} used, {e.KvBlocksCached} cached, {e.KvBlocksFree} free.")
            : "At the end: GET /admin/engine did not answer.");
        md.AppendLine(Rss is { } r
            ? string.Create(c, $"RSS: {r.WarmupKb / 1024.0:F1} MiB at {r.WarmupSeconds:F0} s (after warm-up), {r.EndKb / 1024.0:F1} MiB at the end ({r.ChangePercent:+0.0;-0.0}%, limit +{MaxRssGrowthPercent:G}%), peak {r.PeakKb / 1024.0:F1} MiB.")
            : "RSS: not measured (no server process to watch: start the server here, or pass --pid).");
        md.AppendLine().AppendLine("| s | RSS MiB | running | waiting | KV used | KV cached | KV free | client in flight |");
        md.AppendLine("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        foreach (var s in Samples)
        {
            var rss = s.RssKb is { } kb ? (kb / 1024.0).ToString("F1", c) : "n/a";
            var engine = s.Engine is { } en ? $"{en.Running} | {en.Waiting} | {en.KvBlocksUsed} | {en.KvBlocksCached} | {en.KvBlocksFree}" : "n/a | n/a | n/a | n/a | n/a";
            md.AppendLine(c, $"| {s.Seconds:F0} | {rss} | {engine} | {s.ClientInFlight} |");
        }
        return md.ToString();
    }
}

[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower,
    WriteIndented = true,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(SoakReport))]
internal sealed partial class SoakJsonContext : JsonSerializerContext;
