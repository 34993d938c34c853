using System.Diagnostics;
using System.Globalization;
using InferenceServer.LoadGenerator.Measurement;
using InferenceServer.LoadGenerator.Reports;
using InferenceServer.LoadGenerator.Targets;

namespace InferenceServer.LoadGenerator.Scenarios;

/// <summary>
/// Open loop: at each rate, requests arrive as a Poisson process (seeded) for the level's
/// duration whether or not earlier ones have finished, as independent users would send them.
/// </summary>
public static class RateWorkload
{
    public static async Task<RunReport> RunAsync(string name, ILoadTarget target, PromptSource prompts, IReadOnlyList<double> rates, SweepOptions options,
        IEngineCounters? counters, IProgressDisplay progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(target);
        ArgumentNullException.ThrowIfNull(rates);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(progress);
        var run = new RunReport { Name = name, Target = target.Address, TargetKind = target.Kind, Workload = "rate" };
        await ConcurrencyWorkload.WarmUpAsync(target, prompts, options, cancellationToken).ConfigureAwait(false);
        var all = new List<RequestRecord>();
        for (var index = 0; index < rates.Count; index++)
        {
            var rate = rates[index];
            var label = string.Create(CultureInfo.InvariantCulture, $"{rate:0.###} req/s");
            var line = progress.Start($"{name}: {label}");
            var schedule = PoissonArrivals.Schedule(rate, options.Duration, Seeds.Derive(options.Seed, 0x52415445, index)).ToArray();
            if (options.RequestsPerLevel is { } limit && schedule.Length > limit)
                schedule = schedule[..limit];
            var started = Stopwatch.GetTimestamp();
            var sent = 0;
            var (level, records) = await LevelRunner.MeasureAsync(label, rate, counters, line,
                () => LevelRunner.Fraction(started, options.Duration, options.RequestsPerLevel, () => Volatile.Read(ref sent)),
                async sink =>
                {
                    var inFlight = new List<Task>(schedule.Length);
                    for (var k = 0; k < schedule.Length; k++)
                    {
                        var wait = schedule[k] - Stopwatch.GetElapsedTime(started);
                        if (wait > TimeSpan.Zero)
                            await Task.Delay(wait, cancellationToken).ConfigureAwait(false);
                        var request = ConcurrencyWorkload.Request(prompts, options, ConcurrencyWorkload.Key(index + 1, 0xFFFF, k));
                        Interlocked.Increment(ref sent);
                        inFlight.Add(Task.Run(async () => sink.Enqueue(await target.SendAsync(request, cancellationToken).ConfigureAwait(false)), cancellationToken));
                    }
                    await Task.WhenAll(inFlight).ConfigureAwait(false);
                },
                cancellationToken).ConfigureAwait(false);
            run.Levels.Add(level);
            all.AddRange(records);
        }
        run.TimeToFirstTokenHistogram = LevelRunner.TimeToFirstToken(all);
        return run;
    }
}
