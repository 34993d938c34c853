using System.Collections.Concurrent;
using System.Globalization;
using InferenceServer.LoadGenerator.Measurement;
using InferenceServer.LoadGenerator.Reports;
using InferenceServer.LoadGenerator.Targets;

namespace InferenceServer.LoadGenerator.Scenarios;

public sealed record IdeOptions
{
    public int Sessions { get; init; } = 4;
    public TypingOptions Typing { get; init; } = new();

    /// <summary>How long the people type; the last requests are waited for.</summary>
    public TimeSpan Duration { get; init; } = TimeSpan.FromSeconds(20);

    /// <summary>At most this many requests from all typists together; null for no limit.</summary>
    public int? MaxRequests { get; init; }

    public int Seed { get; init; }

    /// <summary>Whether to send suffixes; null: probe the target first.</summary>
    public bool? FillInTheMiddle { get; init; }
}

/// <summary>
/// People typing in an editor with a completion plugin: every keystroke sends a fill-in-the-middle
/// request (greedy, 16 to 64 tokens, stopping at a blank line) and cancels the previous one if it
/// has not finished, as editor plugins do. Consecutive prompts of one person share all but their
/// last characters, so a server with a prefix cache should serve most of each prompt from it.
/// </summary>
public static class IdeWorkload
{
    /// <summary>The stop that ends a suggestion: a blank line.</summary>
    public const string BlankLine = "\n\n";

    public static async Task<RunReport> RunAsync(string name, ILoadTarget target, SourceLibrary library, IdeOptions options,
        IEngineCounters? counters, IProgressDisplay progress, CancellationToken cancellationToken, TimeProvider? time = null)
    {
        ArgumentNullException.ThrowIfNull(target);
        ArgumentNullException.ThrowIfNull(library);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(progress);
        time ??= TimeProvider.System;
        var fim = options.FillInTheMiddle ?? await SupportsFillInTheMiddleAsync(target, cancellationToken).ConfigureAwait(false);
        var run = new RunReport
        {
            Name = name,
            Target = target.Address,
            TargetKind = target.Kind,
            Workload = "ide",
            FillInTheMiddle = fim,
        };
        var label = string.Create(CultureInfo.InvariantCulture, $"{options.Sessions} session{(options.Sessions == 1 ? "" : "s")}");
        var line = progress.Start($"{name}: {label}");
        var started = time.GetTimestamp();
        var issued = 0;
        var (level, records) = await LevelRunner.MeasureAsync(label, options.Sessions, counters, line,
            () => Math.Min(1, Math.Max(time.GetElapsedTime(started) / options.Duration, options.MaxRequests is > 0 ? (double)Volatile.Read(ref issued) / options.MaxRequests.Value : 0)),
            sink => Task.WhenAll(Enumerable.Range(0, options.Sessions).Select(session => Task.Run(() =>
                TypeAsync(target, new TypingSession(library, options.Typing, options.Seed, session), fim, started, options, () => Interlocked.Increment(ref issued),
                    sink, time, cancellationToken), cancellationToken))),
            cancellationToken).ConfigureAwait(false);
        run.Levels.Add(level);
        run.TimeToFirstTokenHistogram = LevelRunner.TimeToFirstToken(records);
        return run;
    }

    /// <summary>
    /// One person's keystrokes until the duration is over: each sends a request and cancels the
    /// previous one if it is still running. Before moving to a new place the last suggestion is
    /// waited for, as a person reads it.
    /// </summary>
    public static async Task TypeAsync(ILoadTarget target, TypingSession session, bool fillInTheMiddle, long started, IdeOptions options,
        Func<int> nextRequest, ConcurrentQueue<RequestRecord> sink, TimeProvider time, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(target);
        ArgumentNullException.ThrowIfNull(session);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(nextRequest);
        ArgumentNullException.ThrowIfNull(time);
        var pending = new List<Task>();
        var sources = new List<CancellationTokenSource>();
        Task? previous = null;
        CancellationTokenSource? previousSource = null;
        var currentRun = -1;
        try
        {
            foreach (var keystroke in session.Keystrokes())
            {
                if (keystroke.Run != currentRun && previous is not null)
                {
                    await previous.ConfigureAwait(false);
                    previous = null;
                }
                currentRun = keystroke.Run;
                if (time.GetElapsedTime(started) + keystroke.Delay >= options.Duration)
                    break;
                if (nextRequest() > options.MaxRequests)
                    break;
                await Task.Delay(keystroke.Delay, time, cancellationToken).ConfigureAwait(false);
                if (previous is { IsCompleted: false })
                    await previousSource!.CancelAsync().ConfigureAwait(false);
                var request = new LoadRequest
                {
                    Prompt = keystroke.Prefix,
                    Suffix = fillInTheMiddle ? keystroke.Suffix : null,
                    MaxTokens = keystroke.MaxTokens,
                    Stop = [BlankLine],
                    Temperature = 0,
                };
                previousSource = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                sources.Add(previousSource);
                previous = RecordAsync(target, request, sink, previousSource.Token);
                pending.Add(previous);
            }
            await Task.WhenAll(pending).ConfigureAwait(false);
        }
        finally
        {
            foreach (var source in sources)
                source.Dispose();
        }
    }

    private static async Task RecordAsync(ILoadTarget target, LoadRequest request, ConcurrentQueue<RequestRecord> sink, CancellationToken cancellationToken) =>
        sink.Enqueue(await target.SendAsync(request, cancellationToken).ConfigureAwait(false));

    /// <summary>
    /// Whether the target takes a suffix: one small fill-in-the-middle request. A refusal as an
    /// invalid request (a model without FIM tokens) means no; any other failure is an error.
    /// </summary>
    public static async Task<bool> SupportsFillInTheMiddleAsync(ILoadTarget target, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(target);
        var probe = new LoadRequest { Prompt = "def add(a, b):\n    ", Suffix = "\n\nprint(add(1, 2))\n", MaxTokens = 2, Temperature = 0 };
        var record = await target.SendAsync(probe, cancellationToken).ConfigureAwait(false);
        return record.Outcome switch
        {
            RequestOutcome.Completed => true,
            RequestOutcome.Failed when record.ErrorKey is "http:400" or "http:422" or "grpc:INVALID_ARGUMENT" or "engine:INVALID_ARGUMENT" => false,
            _ => throw new InvalidOperationException($"the fill-in-the-middle probe to {target.Address} failed: {record.ErrorKey}: {record.ErrorMessage}"),
        };
    }
}
