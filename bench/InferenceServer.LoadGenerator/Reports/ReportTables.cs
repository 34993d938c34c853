using System.Globalization;
using InferenceServer.LoadGenerator.Measurement;

namespace InferenceServer.LoadGenerator.Reports;

/// <summary>A table of a report, rendered the same way to Markdown and HTML.</summary>
public sealed record ReportTable(string Title, string? Caption, string[] Headers, List<string[]> Rows, List<string> Footnotes);

/// <summary>The summary tables of a report: the facts, serving overhead, one per run, the bare runner.</summary>
public static class ReportTables
{
    public static List<ReportTable> Build(BenchmarkReport report)
    {
        ArgumentNullException.ThrowIfNull(report);
        var tables = new List<ReportTable> { Facts(report) };
        if (report.ServingOverhead.Count > 0)
        {
            tables.Add(new ReportTable("Serving overhead",
                "End-to-end inter-token latency at 1 stream (p50) / the bare model's decode step at batch 1 (p50).",
                ["run", "inter-token latency (ms)", "bare decode step (ms)", "overhead"],
                [.. report.ServingOverhead.Select(o => new[] { o.Run, F(o.InterTokenMs, 2), F(o.BareStepMs, 2), F(o.Ratio, 2) + "x" })], []));
        }
        foreach (var run in report.Runs)
            tables.Add(Run(run));
        if (report.Runner is { } runner)
        {
            tables.Add(new ReportTable("Bare model runner",
                string.Create(CultureInfo.InvariantCulture, $"DecoderRunner on {runner.ModelPath}: prefill of {runner.PromptTokens}-token prompts, then one token per row per step."),
                ["batch", "steps", "prefill p50 (ms)", "step p50 / p90 / p99 (ms)", "tokens/s"],
                [.. runner.Levels.Select(l => new[]
                {
                    l.Batch.ToString(CultureInfo.InvariantCulture), l.Steps.ToString(CultureInfo.InvariantCulture), F(l.PrefillMs?.P50, 1),
                    Triple(l.StepMs, 2), F(l.TokensPerSecond, 1),
                })], []));
        }
        return tables;
    }

    private static ReportTable Facts(BenchmarkReport report)
    {
        var p = report.Parameters;
        var e = report.Environment;
        var rows = new List<string[]>
        {
            new[] { "target", report.TargetKind == "suite" ? "our server, started in this process on loopback ports (suite)" : $"{report.Target} ({report.TargetKind})" },
            new[] { "model", report.Model is null ? "—" : report.ModelPath is null ? report.Model : $"{report.Model} ({report.ModelPath})" },
            new[] { "workload", Workload(p) },
            new[] { "seed", p.Seed.ToString(CultureInfo.InvariantCulture) },
            new[] { "source text", p.Manifest is null ? "—" : $"{p.Manifest} ({p.SourceFiles} files under {p.SourceRoot})" },
            new[] { "CPU", $"{e.CpuModel}, {e.Cores} cores" },
            new[] { "GPU", e.Gpu ?? "—" },
            new[] { "OS / .NET", $"{e.Os} / {e.Dotnet}" },
            new[] { "commit", e.GitCommit ?? "—" },
            new[] { "started", report.Started.ToString("yyyy-MM-dd HH:mm:ss zzz", CultureInfo.InvariantCulture) },
        };
        return new ReportTable("Setup", null, ["", ""], rows, [.. report.Notes]);
    }

    private static string Workload(WorkloadParameters p)
    {
        var prompt = string.Create(CultureInfo.InvariantCulture,
            $"prompts of {p.PromptTokens} tokens{(p.PromptTokensExact ? "" : " (estimated at 4 characters per token)")}, {p.OutputTokens} output tokens{(p.IgnoreEos ? " (ignore_eos)" : "")}");
        var per = p.RequestsPerLevel is { } n ? string.Create(CultureInfo.InvariantCulture, $"{p.DurationSeconds:0.#} s or {n} requests") : string.Create(CultureInfo.InvariantCulture, $"{p.DurationSeconds:0.#} s");
        return p.Workload switch
        {
            "concurrency" => $"concurrency sweep over {string.Join(", ", p.Levels)} streams, {per} each; {prompt}",
            "rate" => string.Create(CultureInfo.InvariantCulture, $"Poisson arrivals at {string.Join(", ", p.Rates.Select(r => r.ToString("0.###", CultureInfo.InvariantCulture)))} req/s, {per} each; {prompt}"),
            "ide" => IdeText(p),
            _ => $"{p.Workload}: {string.Join(", ", p.Levels)} streams, {per} each; {prompt}; then IDE typing: {IdeText(p)}",
        };
    }

    private static string IdeText(WorkloadParameters p) => string.Create(CultureInfo.InvariantCulture,
        $"{p.Sessions} sessions typing for {p.DurationSeconds:0.#} s, keystrokes every ~{p.KeystrokeMs:0} ms, prefix up to {p.PrefixChars} chars, suffix up to {p.SuffixChars} chars");

    private static ReportTable Run(RunReport run)
    {
        var footnotes = new List<string>();
        foreach (var level in run.Levels.Where(l => l.ErrorsByStatus.Count > 0))
            footnotes.Add($"{level.Label}: errors {string.Join(", ", level.ErrorsByStatus.Select(kv => $"{kv.Key} x{kv.Value}"))}; first: {level.FirstError}");
        foreach (var level in run.Levels.Where(l => l.Cancelled > 0))
            footnotes.Add(FirstTokenLine(level));
        foreach (var level in run.Levels.Where(l => l.IterationMs is not null))
            footnotes.Add(IterationLine(level));
        foreach (var level in run.Levels.Where(l => l.DraftedTokens is > 0))
            footnotes.Add(SpeculationLine(level));
        if (run.FillInTheMiddle == false)
            footnotes.Add("the target refused a suffix (no fill-in-the-middle support), so the requests were plain prefix completions");
        var caption = $"{run.Workload} workload against {run.TargetKind} {run.Target}{(run.Reference ? " (reference)" : "")}";
        return new ReportTable(run.Name, caption,
        [
            run.Workload == "rate" ? "offered rate" : "level", "requests", "ok", "cancelled (after / before 1st token)", "failed",
            "TTFT p50 / p90 / p99 (ms)", "ITL p50 / p90 / p99 (ms)", "end-to-end p50 / p90 / p99 (ms)",
            "output tok/s", "req/s", "prompt tokens", "prefix cache", "cancel to free",
        ],
        [.. run.Levels.Select(l => new[]
        {
            l.Label, I(l.Requests), I(l.Completed), CancelledCell(l), I(l.Failed),
            Triple(l.TimeToFirstTokenMs, 1), Triple(l.InterTokenMs, 2), Triple(l.EndToEndMs, 1),
            F(l.OutputTokensPerSecond, 1), F(l.RequestsPerSecond, 2), F(l.MeanPromptTokens, 0),
            l.PrefixCacheShare is { } share ? Percent(share, 1) : "n/a",
            CancelToFree(l),
        })], footnotes);
    }

    /// <summary>The cancelled requests, split by whether a first token came before the cancellation: "833 (825 / 8)".</summary>
    public static string CancelledCell(LevelReport level)
    {
        ArgumentNullException.ThrowIfNull(level);
        return level.Cancelled == 0
            ? "0"
            : string.Create(CultureInfo.InvariantCulture, $"{level.Cancelled} ({level.CancelledAfterFirstToken} / {level.CancelledBeforeFirstToken})");
    }

    /// <summary>What TTFT and ITL cover at a level with cancellations.</summary>
    public static string FirstTokenLine(LevelReport level)
    {
        ArgumentNullException.ThrowIfNull(level);
        var withFirst = level.TimeToFirstTokenMs?.Count ?? 0;
        return string.Create(CultureInfo.InvariantCulture,
            $"{level.Label}: {level.CancelledAfterFirstToken} of {level.Cancelled} cancelled requests got a first token before their cancellation, {level.CancelledBeforeFirstToken} were cancelled before any; "
            + $"TTFT and ITL cover the {withFirst} requests with a first token (completed or cancelled after it)");
    }

    /// <summary>The engine's iteration durations over the level, where they were seen.</summary>
    public static string IterationLine(LevelReport level)
    {
        ArgumentNullException.ThrowIfNull(level);
        var d = level.IterationMs!;
        var interrupted = level.InterruptedPrefills is > 0 ? $"; {level.InterruptedPrefills} runs of a lone prompt ended early" : "";
        return string.Create(CultureInfo.InvariantCulture,
            $"{level.Label}: engine iterations p50 / p90 / p99 {Triple(d, 1)} ms, longest {d.Max:F1} ms ({d.Count} iterations){interrupted}");
    }

    /// <summary>How many drafted tokens the model accepted over the level, and what share of the output they were.</summary>
    public static string SpeculationLine(LevelReport level)
    {
        ArgumentNullException.ThrowIfNull(level);
        var drafted = level.DraftedTokens!.Value;
        var accepted = level.AcceptedTokens ?? 0;
        return string.Create(CultureInfo.InvariantCulture,
            $"{level.Label}: prompt lookup drafted {drafted} tokens, {accepted} accepted ({Percent((double)accepted / drafted, 1)}), {Percent(level.OutputTokens > 0 ? (double)accepted / level.OutputTokens : 0, 1)} of the output tokens");
    }

    /// <summary>The engine's own cancel-to-free times where seen; else the share freed within one iteration; else n/a.</summary>
    public static string CancelToFree(LevelReport level)
    {
        ArgumentNullException.ThrowIfNull(level);
        var c = level.Cancellation;
        if (c is null)
            return "n/a";
        if (c.CancelToFreeMs is { } measured)
            return string.Create(CultureInfo.InvariantCulture, $"p50 {measured.P50:F1} / p99 {measured.P99:F1} ms ({measured.Count})");
        if (level.Cancelled == 0 && c.ServerCancellations is null or 0)
            return "—";
        if (c.FreedWithinOneIterationShare is { } share)
            return string.Create(CultureInfo.InvariantCulture, $"{Percent(share, 0)} of {c.ServerCancellations} within 1 iteration (~{c.MeanIterationMs:F1} ms)");
        return "n/a";
    }

    public static string Triple(Distribution? d, int decimals) =>
        d is null ? "n/a" : $"{F(d.P50, decimals)} / {F(d.P90, decimals)} / {F(d.P99, decimals)}";

    public static string F(double? value, int decimals) =>
        value is { } v && double.IsFinite(v) ? v.ToString("F" + decimals.ToString(CultureInfo.InvariantCulture), CultureInfo.InvariantCulture) : "n/a";

    public static string Percent(double share, int decimals) => F(share * 100, decimals) + "%";

    private static string I(int value) => value.ToString(CultureInfo.InvariantCulture);
}
