using System.Diagnostics.Metrics;

namespace InferenceServer.Engine;

/// <summary>
/// The engine's instruments (System.Diagnostics.Metrics, meter "InferenceServer.Engine"). Gauges
/// read the engine's latest counts when collected; counters and histograms are recorded by the
/// loop without tags, or with one of a few tags made once (finished_reason), so recording
/// allocates nothing.
/// </summary>
internal sealed class EngineMetrics : IDisposable
{
    public const string MeterName = "InferenceServer.Engine";

    /// <summary>The tag on <c>inference.requests.finished</c>; its values are vLLM's names for how a request ended.</summary>
    public const string FinishedReasonTag = "finished_reason";

    private static readonly KeyValuePair<string, object?> FinishedStop = new(FinishedReasonTag, "stop");
    private static readonly KeyValuePair<string, object?> FinishedLength = new(FinishedReasonTag, "length");
    private static readonly KeyValuePair<string, object?> FinishedAbort = new(FinishedReasonTag, "abort");

    private readonly Meter _meter = new(MeterName);
    private readonly Counter<long> _promptTokens;
    private readonly Counter<long> _promptTokensComputed;
    private readonly Counter<long> _generatedTokens;
    private readonly Counter<long> _prefixHitTokens;
    private readonly Counter<long> _preemptions;
    private readonly Counter<long> _draftTokens;
    private readonly Counter<long> _acceptedTokens;
    private readonly Counter<long> _requests;
    private readonly Counter<long> _finished;
    private readonly Histogram<double> _queueTime;
    private readonly Histogram<double> _timeToFirstToken;
    private readonly Histogram<double> _interTokenLatency;
    private readonly Histogram<double> _endToEnd;
    private readonly Histogram<double> _cancellationToFree;
    private readonly Histogram<double> _iteration;

    public EngineMetrics(InferenceEngine engine)
    {
        _meter.CreateObservableGauge("inference.requests.running", () => engine.Snapshot.Running, description: "Sequences in the batch");
        _meter.CreateObservableGauge("inference.requests.waiting", () => engine.Snapshot.Waiting, description: "Requests waiting for admission");
        _meter.CreateObservableGauge("inference.kv.blocks.used", () => engine.Snapshot.UsedBlocks, description: "KV blocks held by running sequences");
        _meter.CreateObservableGauge("inference.kv.blocks.cached", () => engine.Snapshot.CachedBlocks, description: "KV blocks kept for prefix reuse (evictable)");
        _meter.CreateObservableGauge("inference.kv.blocks.free", () => engine.Snapshot.FreeBlocks, description: "KV blocks free");
        _meter.CreateObservableGauge("inference.kv.usage", () => Usage(engine.Snapshot), "1", "Share of all KV blocks held by running sequences (0..1; cached blocks are not held)");
        _requests = _meter.CreateCounter<long>("inference.requests", description: "Requests submitted");
        _finished = _meter.CreateCounter<long>("inference.requests.finished", description: "Requests finished, by finished_reason: stop, length or abort (cancelled)");
        _promptTokens = _meter.CreateCounter<long>("inference.tokens.prompt", description: "Prompt tokens submitted");
        _promptTokensComputed = _meter.CreateCounter<long>("inference.tokens.prefill", description: "Prompt tokens computed (not served from cache)");
        _generatedTokens = _meter.CreateCounter<long>("inference.tokens.generated", description: "Tokens generated");
        _prefixHitTokens = _meter.CreateCounter<long>("inference.tokens.prefix_hit", description: "Prompt tokens served from cached KV");
        _preemptions = _meter.CreateCounter<long>("inference.preemptions", description: "Sequences preempted for lack of KV blocks");
        _draftTokens = _meter.CreateCounter<long>("inference.speculation.draft_tokens", description: "Tokens drafted by prompt lookup and checked by the model");
        _acceptedTokens = _meter.CreateCounter<long>("inference.speculation.accepted_tokens", description: "Drafted tokens the model's choice agreed with (each saved a step)");
        _timeToFirstToken = _meter.CreateHistogram<double>("inference.time_to_first_token", "s", "From submission to the first token");
        _interTokenLatency = _meter.CreateHistogram<double>("inference.inter_token_latency", "s", "Between consecutive tokens of a sequence");
        _endToEnd = _meter.CreateHistogram<double>("inference.request.duration", "s", "From submission to the final event");
        _queueTime = _meter.CreateHistogram<double>("inference.request.queue_time", "s", "From submission to the first admission into the batch");
        _cancellationToFree = _meter.CreateHistogram<double>("inference.cancellation.to_free", "s", "From a consumer giving up to the release of its sequence");
        _iteration = _meter.CreateHistogram<double>("inference.iteration.duration", "s", "One engine iteration that ran the model: what a running sequence's next token and a cancellation may wait for");
    }

    public void Submitted(int promptTokens)
    {
        _requests.Add(1);
        _promptTokens.Add(promptTokens);
    }

    public void PrefixHit(int tokens) => _prefixHitTokens.Add(tokens);
    public void PromptComputed(int tokens) => _promptTokensComputed.Add(tokens);
    public void Generated() => _generatedTokens.Add(1);
    public void Preempted() => _preemptions.Add(1);

    public void Drafted(int drafted, int accepted)
    {
        _draftTokens.Add(drafted);
        _acceptedTokens.Add(accepted);
    }
    public void FirstToken(TimeSpan elapsed) => _timeToFirstToken.Record(elapsed.TotalSeconds);
    public void InterToken(TimeSpan elapsed) => _interTokenLatency.Record(elapsed.TotalSeconds);
    public void Completed(TimeSpan elapsed) => _endToEnd.Record(elapsed.TotalSeconds);
    public void Admitted(TimeSpan queued) => _queueTime.Record(queued.TotalSeconds);
    public void Iteration(TimeSpan elapsed) => _iteration.Record(elapsed.TotalSeconds);

    public void Finished(FinishReason reason) => _finished.Add(1, reason switch
    {
        FinishReason.Stop => FinishedStop,
        FinishReason.Length => FinishedLength,
        _ => FinishedAbort,
    });

    private static double Usage(EngineSnapshot snapshot)
    {
        var total = snapshot.UsedBlocks + snapshot.CachedBlocks + snapshot.FreeBlocks;
        return total == 0 ? 0 : (double)snapshot.UsedBlocks / total;
    }

    public void CancellationFreed(TimeSpan elapsed) => _cancellationToFree.Record(elapsed.TotalSeconds);

    /// <summary>This engine's meter: a listener tells its instruments from another engine's in the same process by it.</summary>
    public Meter Meter => _meter;

    public void Dispose() => _meter.Dispose();
}
