using System.Collections.Concurrent;
using System.Diagnostics;
using InferenceServer.Engine.Kv;
using InferenceServer.Engine.Sampling;
using InferenceServer.Model;

namespace InferenceServer.Engine;

/// <summary>
/// One model's continuous-batching loop. Requests are submitted from any thread; one dedicated
/// thread owns all scheduling state and, every iteration:
///   1. drops cancelled sequences and admits waiting ones while KV blocks allow (a cached
///      prefix is reused, not recomputed);
///   2. has the model compute every decoding sequence's next position and prefill chunks up to
///      the token budget: on the dense CPU path one batched decode run plus the prefill runs
///      GroupQueryAttention allows (<see cref="SlotScheduler"/>), on the paged path one run for
///      everything (<see cref="PagedScheduler"/>);
///   3. samples, detokenizes, checks stops and hands text to each request's output;
///   4. finished sequences leave at once, their KV cached for reuse.
/// When a decoding sequence needs a block and none is free, cached KV is evicted first, then the
/// newest running sequence is preempted (requeued to recompute its tokens later).
/// </summary>
public sealed class InferenceEngine : IAsyncDisposable
{
    private readonly KvScheduler _scheduler;
    private readonly Tokenizer.Tokenizer _tokenizer;
    private readonly EngineOptions _options;
    private readonly EngineMetrics _metrics;
    private readonly SamplingWorkspace _workspace;
    private readonly ConcurrentQueue<Sequence> _incoming = new();
    // Keyed by (-priority, arrival) in 64 bits, so that negating int.MinValue cannot wrap around.
    private readonly PriorityQueue<Sequence, (long Priority, long Id)> _waiting = new();
    private readonly List<Sequence> _running;
    private readonly SemaphoreSlim _wake = new(0);
    private readonly Thread _thread;
    private readonly CancellationTokenSource _stop = new();
    private readonly TaskCompletionSource _stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly HashSet<int> _stopIds;

    // Per-iteration scratch, sized once.
    private readonly TopLogprob[] _alternatives = new TopLogprob[20];
    private readonly float[] _healingLogits;
    private readonly int[] _healingIds = new int[256];
    private readonly List<Sequence> _finished;

    private long _nextId;
    private int _queued; // submitted, not yet admitted or finished while waiting
    private Exception? _fault;

    /// <summary>An engine over the dense graph's KV slots (the CPU path).</summary>
    public InferenceEngine(IDecoderModel model, Tokenizer.Tokenizer tokenizer, EngineOptions options)
        : this(model, tokenizer, options, startLoop: true)
    {
    }

    /// <summary>An engine over the paged graph's block pool (the CUDA path).</summary>
    public InferenceEngine(IPagedModel model, Tokenizer.Tokenizer tokenizer, EngineOptions options)
        : this(tokenizer, options, engine => new PagedScheduler(engine, model, options), startLoop: true)
    {
    }

    /// <summary>Without its thread, for the scheduler benchmark, which calls <see cref="Iterate"/> itself.</summary>
    internal InferenceEngine(IDecoderModel model, Tokenizer.Tokenizer tokenizer, EngineOptions options, bool startLoop)
        : this(tokenizer, options, engine => new SlotScheduler(engine, model ?? throw new ArgumentNullException(nameof(model)), options), startLoop)
    {
    }

    private InferenceEngine(Tokenizer.Tokenizer tokenizer, EngineOptions options, Func<InferenceEngine, KvScheduler> scheduler, bool startLoop)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(options);
        _tokenizer = tokenizer;
        _options = options;
        _running = [];
        _finished = [];
        _scheduler = scheduler(this);
        _workspace = new SamplingWorkspace(_scheduler.VocabSize);
        _healingLogits = new float[_scheduler.VocabSize];
        _stopIds = [.. options.EosTokenIds];
        _metrics = new EngineMetrics(this);
        _thread = new Thread(Loop) { Name = "inference-engine", IsBackground = true };
        if (startLoop)
            _thread.Start();
        else
            _stopped.TrySetResult();
    }

    /// <summary>What stopped the loop, when a model step or the loop itself threw; null while it runs or after a clean stop.</summary>
    public Exception? Fault => Volatile.Read(ref _fault);

    /// <summary>Completes when the loop has stopped, cleanly or after a fault.</summary>
    public Task Stopped => _stopped.Task;

    /// <summary>Sequences admitted and not yet finished, in admission order (the loop thread's).</summary>
    internal List<Sequence> Running => _running;

    internal EngineMetrics Metrics => _metrics;

    /// <summary>The engine's instruments (meter "InferenceServer.Engine"), for exporters.</summary>
    public System.Diagnostics.Metrics.Meter Meter => _metrics.Meter;

    /// <summary>The KV budget in blocks, and the tokens it holds.</summary>
    public int TotalKvBlocks => _scheduler.TotalBlocks;

    public int Capacity => _scheduler.Capacity;

    /// <summary>Tokens per KV block.</summary>
    public int KvBlockTokens => _scheduler.BlockTokens;

    /// <summary>Counts as of the latest iteration (read on any thread).</summary>
    public EngineSnapshot Snapshot
    {
        get
        {
            int used = Volatile.Read(ref _usedBlocks), cached = Volatile.Read(ref _cachedBlocks);
            return new EngineSnapshot(Volatile.Read(ref _runningCount), Volatile.Read(ref _waitingCount), used, cached, _scheduler.TotalBlocks - used - cached,
                Volatile.Read(ref _iterations), Volatile.Read(ref _cancellations), Volatile.Read(ref _lateCancellations));
        }
    }

    private int _runningCount, _waitingCount, _usedBlocks, _cachedBlocks;
    private long _iterations, _cancellations, _lateCancellations;

    // Stopwatch timestamps of the current and the previous iteration's start: a sequence
    // abandoned after the previous start is freed within one iteration of its cancellation.
    private long _iterationStart, _previousIterationStart;

    /// <summary>
    /// Queues a request and returns its output. Fails at once, queuing nothing, when the request
    /// is invalid (<see cref="RequestValidationException"/>), the queue is full
    /// (<see cref="EngineOverloadedException"/>) or the engine has stopped.
    /// Cancelling <paramref name="cancellationToken"/> (or leaving the output unread) ends the
    /// generation at the next iteration.
    /// </summary>
    public GenerationOutput Submit(GenerationRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (_fault is not null || _stop.IsCancellationRequested)
            throw new EngineStoppedException(_fault is null ? "the engine is stopping" : $"the engine stopped after an error: {_fault.Message}");
        Validate(request);
        // Everything that can fail happens before the queue slot is taken, so a request that
        // fails here has nothing to give back.
        var sampling = request.Sampling;
        var output = new GenerationOutput(request.MaxTokens, sampling.Logprobs);
        var detokenizer = _tokenizer.CreateStreamingDetokenizer(skipSpecialTokens: true);
        detokenizer.StopStrings = request.StopStrings;
        var prompt = request.PromptTokens is int[] array ? array : request.PromptTokens.ToArray();
        var healed = request.HealPromptEnd && _tokenizer.Healing is { } healing ? healing.HealableEnd(prompt) ?? [] : [];
        var computed = prompt.AsSpan(0, prompt.Length - (healed.Length > 0 ? 1 : 0));
        detokenizer.KnownLeadingBytes = healed.Length;
        var sequence = new Sequence(Interlocked.Increment(ref _nextId), request, computed, healed,
            new Sampler(sampling, _scheduler.VocabSize, computed), detokenizer, output, Stopwatch.GetTimestamp(), cancellationToken);
        if (Interlocked.Increment(ref _queued) > _options.MaxWaitingRequests)
        {
            Interlocked.Decrement(ref _queued);
            sequence.Dispose();
            throw new EngineOverloadedException($"the queue is full ({_options.MaxWaitingRequests} requests waiting); try again later");
        }
        _incoming.Enqueue(sequence);
        _metrics.Submitted(request.PromptTokens.Count);
        _wake.Release();
        return output;
    }

    private void Validate(GenerationRequest request)
    {
        var prompt = request.PromptTokens;
        if (prompt is null || prompt.Count == 0)
            throw new RequestValidationException("the prompt is empty");
        if (request.MaxTokens < 1)
            throw new RequestValidationException($"max_tokens must be at least 1, got {request.MaxTokens}");
        // In 64 bits: a client's max_tokens near int.MaxValue must not wrap around and pass.
        if ((long)prompt.Count + request.MaxTokens > _scheduler.Capacity)
            throw new RequestValidationException(
                $"the prompt ({prompt.Count} tokens) plus max_tokens ({request.MaxTokens}) exceeds the context length of {_scheduler.Capacity} tokens");
        if (_scheduler.BlocksFor(prompt.Count + 1) > _scheduler.TotalBlocks)
            throw new RequestValidationException(
                $"the prompt ({prompt.Count} tokens) does not fit the KV cache budget of {_scheduler.TotalBlocks * _scheduler.BlockTokens} tokens");
        foreach (var token in prompt)
        {
            if ((uint)token >= (uint)_scheduler.VocabSize)
                throw new RequestValidationException($"token id {token} is outside the vocabulary (0..{_scheduler.VocabSize - 1})");
        }
        if (request.Sampling.Validate() is { } problem)
            throw new RequestValidationException(problem);
        foreach (var id in request.StopTokenIds)
        {
            if ((uint)id >= (uint)_scheduler.VocabSize)
                throw new RequestValidationException($"stop token id {id} is outside the vocabulary (0..{_scheduler.VocabSize - 1})");
        }
        if (request.StopStrings.Any(string.IsNullOrEmpty))
            throw new RequestValidationException("stop strings cannot be empty");
    }

    private void Loop()
    {
        try
        {
            while (!_stop.IsCancellationRequested)
            {
                if (_running.Count == 0 && _waiting.Count == 0 && _incoming.IsEmpty)
                {
                    try
                    {
                        _wake.Wait(_stop.Token);
                    }
                    catch (OperationCanceledException)
                    {
                        break;
                    }
                }
                Iterate();
            }
        }
#pragma warning disable CA1031 // the loop must report any failure to every waiting request rather than die silently
        catch (Exception e)
#pragma warning restore CA1031
        {
            Volatile.Write(ref _fault, e);
        }
        finally
        {
            FinishEverything();
            _stopped.TrySetResult();
        }
    }

    /// <summary>One scheduling iteration.</summary>
    internal void Iterate()
    {
        _previousIterationStart = _iterationStart;
        _iterationStart = Stopwatch.GetTimestamp();
        Volatile.Write(ref _iterations, _iterations + 1);
        while (_incoming.TryDequeue(out var arrived))
            _waiting.Enqueue(arrived, (-(long)arrived.Request.Priority, arrived.Id));

        DropCancelled();
        RetireFinished();
        Admit();
        _scheduler.ReserveDecodeBlocks();
        var ranModel = _running.Count > 0; // an iteration with nothing admitted only waited
        _scheduler.Run();
        RetireFinished();
        PublishSnapshot();
        if (ranModel)
            _metrics.Iteration(Stopwatch.GetElapsedTime(_iterationStart));
    }

    private void DropCancelled()
    {
        foreach (var sequence in _running)
        {
            if (sequence.CancelRequested)
            {
                CountCancellation(sequence);
                Complete(sequence, FinishReason.Cancelled, null);
            }
        }
        if (_waiting.Count > 0 && AnyWaitingCancelled())
        {
            // Rare: rebuild the queue without the cancelled ones.
            var keep = new List<Sequence>(_waiting.Count);
            while (_waiting.TryDequeue(out var sequence, out _))
            {
                if (sequence.CancelRequested)
                {
                    CountCancellation(sequence);
                    FinishWaiting(sequence);
                }
                else
                    keep.Add(sequence);
            }
            foreach (var sequence in keep)
                _waiting.Enqueue(sequence, (-(long)sequence.Request.Priority, sequence.Id));
        }
    }

    // Cancellation-to-free: from the consumer giving up to the release of the sequence (this iteration's start).
    private void CountCancellation(Sequence sequence)
    {
        var abandonedAt = sequence.Output.AbandonedAt;
        Volatile.Write(ref _cancellations, _cancellations + 1);
        if (abandonedAt < _previousIterationStart)
            Volatile.Write(ref _lateCancellations, _lateCancellations + 1);
        _metrics.CancellationFreed(Stopwatch.GetElapsedTime(abandonedAt, _iterationStart));
    }

    private bool AnyWaitingCancelled()
    {
        foreach (var (sequence, _) in _waiting.UnorderedItems)
        {
            if (sequence.CancelRequested)
                return true;
        }
        return false;
    }

    private void FinishWaiting(Sequence sequence)
    {
        if (sequence.Preemptions == 0)
            Interlocked.Decrement(ref _queued);
        if (_fault is { } fault)
            sequence.Output.Fail(fault);
        else
        {
            sequence.Output.Finish(FinishReason.Cancelled, UsageOf(sequence), null);
            _metrics.Finished(FinishReason.Cancelled);
        }
        sequence.Dispose();
    }

    // Highest priority first; a request that does not fit waits, and so does everything behind it.
    private void Admit()
    {
        while (_waiting.TryPeek(out var sequence, out _) && _scheduler.TryAdmit(sequence))
        {
            _waiting.Dequeue();
            if (sequence.Preemptions == 0)
                Interlocked.Decrement(ref _queued);
            _running.Add(sequence);
            if (sequence.CachedPromptTokens < 0)
            {
                sequence.CachedPromptTokens = Math.Min(sequence.Computed, sequence.PromptLength);
                sequence.FirstAdmittedAt = Stopwatch.GetTimestamp();
                _metrics.Admitted(Stopwatch.GetElapsedTime(sequence.SubmittedAt, sequence.FirstAdmittedAt));
                _metrics.PrefixHit(sequence.CachedPromptTokens);
            }
        }
    }

    internal Sequence Newest()
    {
        var newest = _running[0];
        foreach (var sequence in _running)
        {
            if (sequence.FirstAdmittedAt > newest.FirstAdmittedAt || (sequence.FirstAdmittedAt == newest.FirstAdmittedAt && sequence.Id > newest.Id))
                newest = sequence;
        }
        return newest;
    }

    // The sequence gives up its slot (its KV stays cached, so it often comes back cheaply) and
    // waits to recompute its prompt and what it has generated so far.
    internal void Preempt(Sequence sequence)
    {
        _running.Remove(sequence);
        _scheduler.Release(sequence);
        sequence.Computed = 0;
        sequence.Preemptions++;
        _waiting.Enqueue(sequence, (-(long)sequence.Request.Priority, sequence.Id));
        _metrics.Preempted();
    }

    // Sample the next token from the logits of the sequence's last computed position.
    internal void Accept(Sequence sequence, ReadOnlySpan<float> logits)
    {
        if (sequence.Request.PrefillOnly)
        {
            Complete(sequence, FinishReason.Length, null);
            return;
        }
        if (sequence.HealingLeft > 0)
            logits = HealingLogits(sequence, logits);
        var sampled = sequence.Sampler.Sample(logits, _workspace, _alternatives.AsSpan(0, sequence.Request.Sampling.Logprobs), out var alternativeCount);
        Emit(sequence, sampled, alternativeCount);
    }

    /// <summary>
    /// Whether the sequence's next token needs its whole logits row, or the reductions a paged
    /// step returns anyway will do (<see cref="Sampler.CanSampleFromTop"/>: greedy or top-k
    /// within the graph's, no penalties, no more alternatives than it holds); token healing
    /// masks the logits, so it needs the row.
    /// </summary>
    internal static bool NeedsLogits(Sequence sequence, int topK) =>
        !sequence.Request.PrefillOnly && (sequence.HealingLeft > 0 || !sequence.Sampler.CanSampleFromTop(topK));

    /// <summary>
    /// Chooses a token for a sequence that <see cref="NeedsLogits"/> says needs nothing more than
    /// what a paged step reduced: greedy takes the step's arg-max, top-k sampling draws from the
    /// best logits; log-probabilities are those logits less the row's logsumexp.
    /// </summary>
    internal void AcceptReduced(Sequence sequence, int argMax, ReadOnlySpan<float> topLogits, ReadOnlySpan<long> topIds, float logSumExp)
    {
        if (sequence.Request.PrefillOnly)
        {
            Complete(sequence, FinishReason.Length, null);
            return;
        }
        var alternatives = _alternatives.AsSpan(0, sequence.Request.Sampling.Logprobs);
        if (!sequence.Request.Sampling.IsGreedy)
        {
            var sampled = sequence.Sampler.SampleFromTop(topLogits, topIds, logSumExp, _workspace, alternatives, out var written);
            Emit(sequence, sampled, written);
            return;
        }
        sequence.Sampler.Skip(); // the one draw per token a seeded sequence's later tokens depend on
        var logprob = topIds.Length > 0 && topIds[0] == argMax ? topLogits[0] - logSumExp : float.NaN;
        var count = Math.Min(alternatives.Length, topIds.Length);
        for (var i = 0; i < count; i++)
            alternatives[i] = new TopLogprob((int)topIds[i], topLogits[i] - logSumExp);
        Emit(sequence, new SampledToken(argMax, logprob), count);
    }

    // Hand a chosen token to the sequence's output, and decide whether the sequence ends.
    private void Emit(Sequence sequence, SampledToken sampled, int alternativeCount)
    {
        var token = sampled.Id;
        sequence.Sampler.Accept(token);
        sequence.Tokens[sequence.Length++] = token;
        if (sequence.HealingLeft > 0)
        {
            sequence.HealingTokens++;
            sequence.HealingLeft = _tokenizer.Healing!.Remaining(sequence.HealedBytes.AsSpan(^sequence.HealingLeft), token);
        }

        var now = Stopwatch.GetTimestamp();
        if (sequence.FirstTokenAt == 0)
        {
            sequence.FirstTokenAt = now;
            _metrics.FirstToken(Stopwatch.GetElapsedTime(sequence.SubmittedAt, now));
        }
        else
        {
            _metrics.InterToken(Stopwatch.GetElapsedTime(sequence.LastTokenAt, now));
        }
        sequence.LastTokenAt = now;
        _metrics.Generated();

        var request = sequence.Request;
        var isStopId = (!request.IgnoreEos && _stopIds.Contains(token)) || ContainsStopId(request.StopTokenIds, token);
        // A stop id's own text is not output.
        var text = isStopId ? default : sequence.Detokenizer.Add(token);
        var cut = request.MinLineIndent > 0 ? UnderIndented(sequence, text, request.MinLineIndent) : -1;
        sequence.Output.Append(token, cut < 0 ? text : text[..cut], sampled.Logprob, _alternatives.AsSpan(0, alternativeCount));

        if (isStopId)
            Complete(sequence, FinishReason.Stop, null);
        else if (sequence.Detokenizer.Stopped)
            Complete(sequence, FinishReason.Stop, sequence.Detokenizer.MatchedStop);
        else if (cut >= 0)
            Complete(sequence, FinishReason.Length, null, flushHeldText: false); // what the detokenizer holds comes after the cut
        else if (request.NewlineTimeLimit is { } limit && text.Contains('\n') && Stopwatch.GetElapsedTime(sequence.FirstTokenAt, now) > limit)
            Complete(sequence, FinishReason.Length, null);
        else if (sequence.Generated - sequence.HealingTokens >= request.MaxTokens || sequence.Length >= _scheduler.Capacity)
            Complete(sequence, FinishReason.Length, null);
    }

    // Where in the new text a line after the first newline starts with less indentation than
    // required (the index of its first other character), or -1; the state carries across tokens.
    private static int UnderIndented(Sequence sequence, ReadOnlySpan<char> text, int minIndent)
    {
        for (var i = 0; i < text.Length; i++)
        {
            var c = text[i];
            if (c == '\n')
                sequence.LineIndent = 0;
            else if (sequence.LineIndent < 0)
                continue;
            else if (c is ' ' or '\t')
                sequence.LineIndent++;
            else if (sequence.LineIndent < minIndent)
                return i;
            else
                sequence.LineIndent = -1;
        }
        return -1;
    }

    // While healed bytes are left to spell, the next token must start with all of them or be a
    // beginning of them; ending (a stop id) stays possible, since an empty answer is one too.
    private ReadOnlySpan<float> HealingLogits(Sequence sequence, ReadOnlySpan<float> logits)
    {
        var healing = _tokenizer.Healing!;
        var remaining = sequence.HealedBytes.AsSpan(^sequence.HealingLeft);
        var masked = _healingLogits.AsSpan(0, logits.Length);
        masked.Fill(float.NegativeInfinity);
        foreach (var id in healing.Extending(remaining))
            masked[id] = logits[id];
        foreach (var id in _healingIds.AsSpan(0, healing.BeginningsOf(remaining, _healingIds)))
            masked[id] = logits[id];
        if (!sequence.Request.IgnoreEos)
        {
            foreach (var id in _stopIds)
                masked[id] = logits[id];
        }
        var stopIds = sequence.Request.StopTokenIds;
        for (var i = 0; i < stopIds.Count; i++)
            masked[stopIds[i]] = logits[stopIds[i]];
        return masked;
    }

    private static bool ContainsStopId(IReadOnlyList<int> ids, int token)
    {
        for (var i = 0; i < ids.Count; i++)
        {
            if (ids[i] == token)
                return true;
        }
        return false;
    }

    private void Complete(Sequence sequence, FinishReason reason, string? matchedStop, bool flushHeldText = true)
    {
        if (flushHeldText && (reason != FinishReason.Stop || matchedStop is null))
        {
            // Whatever the detokenizer still held back (a possible stop-string start) is final text now.
            sequence.Output.AppendText(reason == FinishReason.Cancelled ? default : sequence.Detokenizer.Finish());
        }
        sequence.Output.Finish(reason, UsageOf(sequence), matchedStop);
        _metrics.Completed(Stopwatch.GetElapsedTime(sequence.SubmittedAt));
        _metrics.Finished(reason);
        _finished.Add(sequence);
    }

    private void RetireFinished()
    {
        foreach (var sequence in _finished)
        {
            _scheduler.Release(sequence);
            _running.Remove(sequence);
            sequence.Dispose();
        }
        _finished.Clear();
    }

    private static Usage UsageOf(Sequence sequence) => new(
        sequence.PromptLength,
        Math.Max(0, sequence.Generated),
        Math.Max(0, sequence.CachedPromptTokens),
        sequence.FirstAdmittedAt == 0 ? TimeSpan.Zero : Stopwatch.GetElapsedTime(sequence.SubmittedAt, sequence.FirstAdmittedAt),
        sequence.FirstTokenAt == 0 ? TimeSpan.Zero : Stopwatch.GetElapsedTime(sequence.SubmittedAt, sequence.FirstTokenAt));

    // Plain fields written by the loop, read by anyone: no allocation per iteration.
    private void PublishSnapshot()
    {
        Volatile.Write(ref _runningCount, _running.Count);
        Volatile.Write(ref _waitingCount, _waiting.Count + _incoming.Count);
        Volatile.Write(ref _usedBlocks, _scheduler.UsedBlocks);
        Volatile.Write(ref _cachedBlocks, _scheduler.CachedBlocks);
    }

    // On shutdown every request still known gets its final event; after a fault, the fault.
    private void FinishEverything()
    {
        foreach (var sequence in _running)
        {
            // Finished in the iteration that failed: already waiting in _finished to be retired.
            if (sequence.Output.IsFinished)
                continue;
            if (_fault is { } fault)
            {
                sequence.Output.Fail(fault);
                _finished.Add(sequence);
            }
            else
                Complete(sequence, FinishReason.Cancelled, null);
        }
        RetireFinished();
        while (_waiting.TryDequeue(out var sequence, out _))
            FinishWaiting(sequence);
        while (_incoming.TryDequeue(out var sequence))
            FinishWaiting(sequence);
        PublishSnapshot();
    }

    /// <summary>Stops the loop; requests still running or waiting end as cancelled.</summary>
    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        _wake.Release();
        await _stopped.Task.ConfigureAwait(false);
        _metrics.Dispose();
        _stop.Dispose();
        _wake.Dispose();
    }
}

/// <summary>Counts at the end of the latest iteration.</summary>
/// <param name="Iterations">Scheduling iterations run so far.</param>
/// <param name="Cancellations">Sequences released because their consumer gave up (cancelled, disconnected).</param>
/// <param name="LateCancellations">Of those, the ones released later than the first iteration that started after the cancellation.</param>
public sealed record EngineSnapshot(int Running, int Waiting, int UsedBlocks, int CachedBlocks, int FreeBlocks,
    long Iterations, long Cancellations, long LateCancellations);
