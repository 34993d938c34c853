using System.Collections.Concurrent;
using InferenceServer.LoadGenerator.Measurement;
using InferenceServer.LoadGenerator.Scenarios;
using InferenceServer.LoadGenerator.Targets;

namespace InferenceServer.LoadGenerator.Soak;

/// <summary>
/// The soak's closed loop: a fixed number of workers, each sending a request, waiting for its end
/// and sending the next, until the duration is up. Each request's kind, size and fate come from
/// the seed and its number: a share of them is cancelled at a random point of its expected
/// lifetime (the running mean of completed requests), which lands anywhere from before the first
/// byte to the last token.
/// </summary>
public sealed class SoakDriver(IReadOnlyDictionary<string, ILoadTarget> targets, PromptSource prompts, SoakSettings settings) : IDisposable
{
    private readonly SoakTally _tally = new();
    private readonly ConcurrentDictionary<long, string> _pending = new();
    private readonly CancellationTokenSource _abandon = new();
    private readonly Lock _latencyLock = new();
    private double _meanCompletedMs = 1000; // until the first requests complete
    private long _completedSeen;
    private long _next;

    public SoakTally Tally => _tally;

    /// <summary>Requests sent and not yet ended.</summary>
    public int InFlight => _pending.Count;

    /// <summary>
    /// Runs <paramref name="concurrency"/> workers for the settings' duration, then waits for the
    /// requests in flight up to the drain timeout; those still pending are counted lost and abandoned.
    /// </summary>
    public async Task RunAsync(int concurrency, CancellationToken cancellationToken)
    {
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        stop.CancelAfter(settings.Duration);
        var workers = Enumerable.Range(0, concurrency).Select(_ => Task.Run(() => WorkerAsync(stop.Token), CancellationToken.None)).ToArray();
        var all = Task.WhenAll(workers);
        try
        {
            await all.WaitAsync(settings.Duration + settings.DrainTimeout, cancellationToken).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            foreach (var kind in _pending.Values)
                _tally.Abandoned(kind);
            _pending.Clear();
            await _abandon.CancelAsync().ConfigureAwait(false);
            // Cancelled requests return at once; a call that ignores even that is left behind.
            await Task.WhenAny(all, Task.Delay(TimeSpan.FromSeconds(10), CancellationToken.None)).ConfigureAwait(false);
        }
    }

    private async Task WorkerAsync(CancellationToken stop)
    {
        while (!stop.IsCancellationRequested)
        {
            var key = Interlocked.Increment(ref _next);
            var random = new Random(Seeds.Derive(settings.Seed, 0x534F414B, key));
            var kind = settings.Mix[random.Next(settings.Mix.Count)];
            var cancel = random.NextDouble() < settings.CancelFraction;
            var cancelPoint = random.NextDouble();
            var request = new LoadRequest
            {
                Prompt = prompts.Prompt(key),
                MaxTokens = random.Next(Math.Max(1, settings.OutputTokens / 4), settings.OutputTokens + 1),
                IgnoreEos = true,
                Stream = SoakRequestKinds.IsStreamed(kind),
            };
            using var call = CancellationTokenSource.CreateLinkedTokenSource(_abandon.Token);
            if (cancel)
                call.CancelAfter(TimeSpan.FromMilliseconds(1 + (cancelPoint * MeanCompletedMs())));
            _tally.Sent(kind, cancel);
            _pending[key] = kind;
            var record = await targets[kind].SendAsync(request, call.Token).ConfigureAwait(false);
            // A request counted lost when the drain gave up is not counted again.
            if (!_pending.TryRemove(key, out _))
                continue;
            _tally.Ended(kind, record);
            if (record.Outcome == RequestOutcome.Completed)
                NoteCompleted(record.EndMs);
        }
    }

    private double MeanCompletedMs()
    {
        lock (_latencyLock)
            return _meanCompletedMs;
    }

    private void NoteCompleted(double ms)
    {
        lock (_latencyLock)
        {
            _completedSeen++;
            // A plain mean over the first hundred, then a moving one that follows the load as it settles.
            var weight = Math.Max(1.0 / _completedSeen, 0.01);
            _meanCompletedMs += weight * (ms - _meanCompletedMs);
        }
    }

    public void Dispose() => _abandon.Dispose();
}
