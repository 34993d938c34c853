using System.Text.Json.Serialization;
using InferenceServer.LoadGenerator.Measurement;

namespace InferenceServer.LoadGenerator.Reports;

/// <summary>Everything one invocation measured: what report.json holds and the other reports show.</summary>
public sealed record BenchmarkReport
{
    public required DateTimeOffset Started { get; init; }
    public required EnvironmentInfo Environment { get; init; }
    public required string Target { get; init; }
    public required string TargetKind { get; init; }
    public string? Model { get; init; }
    public string? ModelPath { get; init; }
    public required WorkloadParameters Parameters { get; init; }
    public List<RunReport> Runs { get; init; } = [];
    public RunnerReport? Runner { get; set; }
    public List<ServingOverhead> ServingOverhead { get; init; } = [];
    public List<string> Notes { get; init; } = [];
}

/// <summary>The machine and software a report was measured on.</summary>
public sealed record EnvironmentInfo
{
    public required string CpuModel { get; init; }
    public required int Cores { get; init; }

    /// <summary>The GPUs nvidia-smi lists, comma-separated; null where there is none.</summary>
    public string? Gpu { get; init; }

    public required string Os { get; init; }
    public required string Dotnet { get; init; }
    public string? GitCommit { get; init; }
    public required string CommandLine { get; init; }
}

/// <summary>The workload settings, so a report says what it measured and can be run again.</summary>
public sealed record WorkloadParameters
{
    public required string Workload { get; init; }
    public int Seed { get; init; }
    public double DurationSeconds { get; init; }
    public int? RequestsPerLevel { get; init; }
    public IReadOnlyList<int> Levels { get; init; } = [];
    public IReadOnlyList<double> Rates { get; init; } = [];
    public int PromptTokens { get; init; }
    public bool PromptTokensExact { get; init; }
    public int OutputTokens { get; init; }
    public bool IgnoreEos { get; init; }
    public int Sessions { get; init; }
    public int PrefixChars { get; init; }
    public int SuffixChars { get; init; }
    public int TypedChars { get; init; }
    public double KeystrokeMs { get; init; }
    public string? Manifest { get; init; }
    public string? SourceRoot { get; init; }
    public int SourceFiles { get; init; }
    public IReadOnlyDictionary<string, string>? SourceProblems { get; init; }
    public double? ReferenceDurationSeconds { get; init; }
}

/// <summary>One workload against one target: a sweep of levels (streams, rates) or one IDE run.</summary>
public sealed record RunReport
{
    public required string Name { get; init; }
    public required string Target { get; init; }
    public required string TargetKind { get; init; }
    public required string Workload { get; init; }

    /// <summary>A reference run (the engine in-process) rather than the target under test.</summary>
    public bool Reference { get; init; }

    /// <summary>For the IDE workload: whether requests carried a suffix (false after a probe found no fill-in-the-middle support).</summary>
    public bool? FillInTheMiddle { get; init; }

    public List<LevelReport> Levels { get; init; } = [];

    /// <summary>Time to first token of every request of the run, for the distribution chart.</summary>
    public Histogram? TimeToFirstTokenHistogram { get; set; }
}

/// <summary>The figures of one level of a sweep (a stream count, an arrival rate, or the IDE typists).</summary>
public sealed record LevelReport
{
    public required string Label { get; init; }
    public double Value { get; init; }
    public double WallSeconds { get; init; }
    public int Requests { get; init; }
    public int Completed { get; init; }
    public int Cancelled { get; init; }

    /// <summary>Of the cancelled requests, those that got a first token before their cancellation (they count in TTFT and ITL).</summary>
    public int CancelledAfterFirstToken { get; init; }

    /// <summary>Of the cancelled requests, those cancelled before any token arrived.</summary>
    public int CancelledBeforeFirstToken { get; init; }

    public int Failed { get; init; }
    public Dictionary<string, int> ErrorsByStatus { get; init; } = [];
    public string? FirstError { get; init; }
    /// <summary>Over every request that got a first token: completed, or cancelled after it.</summary>
    public Distribution? TimeToFirstTokenMs { get; init; }

    /// <summary>Over the same requests; a cancelled one with the tokens it saw before its cancellation.</summary>
    public Distribution? InterTokenMs { get; init; }

    /// <summary>Over completed requests only.</summary>
    public Distribution? EndToEndMs { get; init; }

    /// <summary>
    /// The engine's iterations that ran the model during the level (only when the engine runs in this
    /// process): what a running sequence's next token and a cancellation may wait for.
    /// </summary>
    public Distribution? IterationMs { get; init; }

    /// <summary>Lone prompts' prefill runs the engine ended early (cancelled, or another request arrived), where its counts were read.</summary>
    public long? InterruptedPrefills { get; init; }

    /// <summary>Tokens the engine drafted by prompt lookup during the level, and how many the model accepted (in this process, speculation on).</summary>
    public long? DraftedTokens { get; init; }
    public long? AcceptedTokens { get; init; }
    public long OutputTokens { get; init; }
    public double OutputTokensPerSecond { get; init; }
    public double RequestsPerSecond { get; init; }
    public double? MeanPromptTokens { get; init; }
    public long PromptTokens { get; init; }
    public long CachedPromptTokens { get; init; }

    /// <summary>Cached prompt tokens / prompt tokens over requests whose usage was reported; null when none was.</summary>
    public double? PrefixCacheShare { get; init; }

    public CancellationFigures? Cancellation { get; init; }
}

/// <summary>Cancellations: the client's count and, where the server tells, how quickly it freed them.</summary>
public sealed record CancellationFigures
{
    public int ClientCancelled { get; init; }

    /// <summary>From cancelling to the client's call returning.</summary>
    public Distribution? ClientCancelToReturnMs { get; init; }

    /// <summary>Where the server-side figures come from: "admin" (GET /admin/engine), "meter" (the engine in this process) or "n/a".</summary>
    public required string ServerSource { get; init; }

    public long? ServerCancellations { get; init; }
    public long? ServerLateCancellations { get; init; }

    /// <summary>Of the server's cancellations, the share freed by the first iteration after the cancellation.</summary>
    public double? FreedWithinOneIterationShare { get; init; }

    /// <summary>Mean engine iteration time over the level (wall time / iterations), the bound on a prompt free.</summary>
    public double? MeanIterationMs { get; init; }

    /// <summary>From the engine seeing the consumer give up to the sequence's release (only when the engine runs in this process).</summary>
    public Distribution? CancelToFreeMs { get; init; }
}

/// <summary>Counts of samples in equal-width bins from <see cref="Start"/>; the last bin also holds everything above.</summary>
public sealed record Histogram
{
    public required double Start { get; init; }
    public required double BinWidth { get; init; }
    public required int[] Counts { get; init; }
    public int Total { get; init; }
    public required string Unit { get; init; }

    /// <summary>Bins from 0 to the 99th percentile (rounded up), so one straggler does not squeeze the rest.</summary>
    public static Histogram? Of(IReadOnlyCollection<double> samples, int bins, string unit)
    {
        ArgumentNullException.ThrowIfNull(samples);
        if (samples.Count == 0)
            return null;
        var sorted = samples.Order().ToArray();
        var top = Math.Max(Percentiles.Of(sorted, 99), sorted[^1] > 0 ? sorted[^1] / 100 : 1);
        var width = NiceStep(top / bins);
        var counts = new int[bins];
        foreach (var sample in sorted)
            counts[Math.Clamp((int)(sample / width), 0, bins - 1)]++;
        return new Histogram { Start = 0, BinWidth = width, Counts = counts, Total = sorted.Length, Unit = unit };
    }

    /// <summary>The smallest 1, 2 or 5 times a power of ten that is at least <paramref name="raw"/>.</summary>
    public static double NiceStep(double raw)
    {
        if (!(raw > 0))
            return 1;
        var power = Math.Pow(10, Math.Floor(Math.Log10(raw)));
        foreach (var factor in new[] { 1.0, 2.0, 5.0, 10.0 })
        {
            if (factor * power >= raw * (1 - 1e-9))
                return factor * power;
        }
        return 10 * power;
    }
}

/// <summary>The bare model runner: decode steps of a batch of N rows, no engine, no network.</summary>
public sealed record RunnerReport
{
    public required string ModelPath { get; init; }
    public int PromptTokens { get; init; }
    public List<RunnerLevel> Levels { get; init; } = [];
}

public sealed record RunnerLevel
{
    public int Batch { get; init; }
    public int Steps { get; init; }
    public Distribution? PrefillMs { get; init; }
    public Distribution? StepMs { get; init; }
    public double TokensPerSecond { get; init; }
}

/// <summary>
/// End-to-end inter-token latency at one stream over the bare model's decode step at batch 1:
/// how much slower a token arrives through the whole stack than the model alone computes it.
/// </summary>
public sealed record ServingOverhead
{
    public required string Run { get; init; }
    public double InterTokenMs { get; init; }
    public double BareStepMs { get; init; }
    public double Ratio { get; init; }
}

[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower,
    WriteIndented = true,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals)]
[JsonSerializable(typeof(BenchmarkReport))]
internal sealed partial class ReportJsonContext : JsonSerializerContext;
