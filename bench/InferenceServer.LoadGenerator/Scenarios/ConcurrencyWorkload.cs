using System.Diagnostics;
using System.Globalization;
using InferenceServer.LoadGenerator.Measurement;
using InferenceServer.LoadGenerator.Reports;
using InferenceServer.LoadGenerator.Targets;

namespace InferenceServer.LoadGenerator.Scenarios;

/// <summary>Settings shared by the concurrency and rate workloads.</summary>
public sealed record SweepOptions
{
    /// <summary>How long each level sends new requests; requests in flight at the end are waited for.</summary>
    public TimeSpan Duration { get; init; } = TimeSpan.FromSeconds(20);

    /// <summary>At most this many requests per level (with <see cref="Duration"/>, whichever comes first); null for no limit.</summary>
    public int? RequestsPerLevel { get; init; }

    public int OutputTokens { get; init; } = 64;
    public bool IgnoreEos { get; init; } = true;
    public int Seed { get; init; }
}

/// <summary>
/// Closed loop: at each level, that many streams each send a request, wait for its end, and send
/// the next, until the level's time (or request count) is used up.
/// </summary>
public static class ConcurrencyWorkload
{
    public static async Task<RunReport> RunAsync(string name, ILoadTarget target, PromptSource prompts, IReadOnlyList<int> levels, SweepOptions options,
        IEngineCounters? counters, IProgressDisplay progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(target);
        ArgumentNullException.ThrowIfNull(prompts);
        ArgumentNullException.ThrowIfNull(levels);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(progress);
        var run = new RunReport { Name = name, Target = target.Address, TargetKind = target.Kind, Workload = "concurrency" };
        await WarmUpAsync(target, prompts, options, cancellationToken).ConfigureAwait(false);
        var all = new List<RequestRecord>();
        foreach (var streams in levels)
        {
            var label = string.Create(CultureInfo.InvariantCulture, $"{streams} stream{(streams == 1 ? "" : "s")}");
            var line = progress.Start($"{name}: {label}");
            var started = Stopwatch.GetTimestamp();
            var deadline = started + (long)(options.Duration.TotalSeconds * Stopwatch.Frequency);
            var issued = 0;
            var (level, records) = await LevelRunner.MeasureAsync(
                label, streams, counters, line,
                () => LevelRunner.Fraction(started, options.Duration, options.RequestsPerLevel, () => Volatile.Read(ref issued)),
                sink => Task.WhenAll(Enumerable.Range(0, streams).Select(stream => Task.Run(async () =>
                {
                    for (var k = 0; Stopwatch.GetTimestamp() < deadline; k++)
                    {
                        if (Interlocked.Increment(ref issued) > options.RequestsPerLevel)
                            break;
                        var request = Request(prompts, options, Key(streams, stream, k));
                        sink.Enqueue(await target.SendAsync(request, cancellationToken).ConfigureAwait(false));
                        cancellationToken.ThrowIfCancellationRequested();
                    }
                }, cancellationToken))),
                cancellationToken).ConfigureAwait(false);
            run.Levels.Add(level);
            all.AddRange(records);
        }
        run.TimeToFirstTokenHistogram = LevelRunner.TimeToFirstToken(all);
        return run;
    }

    /// <summary>A request key unique to (level, stream, k), so no two requests of a run share a prompt.</summary>
    public static long Key(int level, int stream, int k) => ((long)level << 48) | ((long)stream << 32) | (uint)k;

    public static LoadRequest Request(PromptSource prompts, SweepOptions options, long key)
    {
        ArgumentNullException.ThrowIfNull(prompts);
        ArgumentNullException.ThrowIfNull(options);
        return new LoadRequest { Prompt = prompts.Prompt(key), MaxTokens = options.OutputTokens, IgnoreEos = options.IgnoreEos, Temperature = 0 };
    }

    /// <summary>One request before measuring: connections, JIT and the model's first run are not part of any level.</summary>
    public static async Task WarmUpAsync(ILoadTarget target, PromptSource prompts, SweepOptions options, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(target);
        var record = await target.SendAsync(Request(prompts, options, -1) with { MaxTokens = Math.Min(8, options.OutputTokens) }, cancellationToken).ConfigureAwait(false);
        if (record.Outcome == RequestOutcome.Failed)
            throw new InvalidOperationException($"the warm-up request to {target.Address} failed: {record.ErrorKey}: {record.ErrorMessage}");
    }
}
