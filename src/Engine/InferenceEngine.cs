using System.Collections.Concurrent;
using System.Diagnostics;
using InferenceServer.Engine.Kv;
using InferenceServer.Engine.Sampling;
using InferenceServer.Model;

namespace InferenceServer.Engine;

/// <summary>
/// One model's continuous-batching loop. Requests are submitted from any thread; one dedicated
/// thread owns all scheduling state and, every iteration:
///   1. drops cancelled sequences and admits waiting ones while KV blocks and slots allow
///      (longest cached prefix first);
///   2. runs prefill chunks up to the token budget (fresh prompts in adjacent slots together,
///      a chunk on top of a past alone, as GroupQueryAttention on the CPU requires);
///   3. runs every decoding sequence in one batched step;
///   4. samples, detokenizes, checks stops and hands text to each request's output;
///   5. finished sequences leave their slot at once, their KV cached for reuse.
/// When a decoding sequence needs a block and none is free, cached KV is evicted first, then the
/// newest running sequence is preempted (requeued to recompute its tokens later).
/// </summary>
public sealed class InferenceEngine : IAsyncDisposable
{
    private readonly IDecoderModel _model;
    private readonly Tokenizer.Tokenizer _tokenizer;
    private readonly EngineOptions _options;
    private readonly KvSlots _kv;
    private readonly EngineMetrics _metrics;
    private readonly SamplingWorkspace _workspace;
    private readonly ConcurrentQueue<Sequence> _incoming = new();
    private readonly PriorityQueue<Sequence, (int Priority, long Id)> _waiting = new();
    private readonly List<Sequence> _running;
    private readonly Sequence?[] _bySlot;
    private readonly SemaphoreSlim _wake = new(0);
    private readonly Thread _thread;
    private readonly CancellationTokenSource _stop = new();
    private readonly TaskCompletionSource _stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly HashSet<int> _stopIds;

    // Per-iteration scratch, sized once.
    private readonly SequenceStep[] _rows;
    private readonly int[] _rowTokens;
    private readonly TopLogprob[] _alternatives = new TopLogprob[20];
    private readonly float[] _healingLogits;
    private readonly int[] _healingIds = new int[256];
    private readonly List<Sequence> _finished;

    private long _nextId;
    private int _queued; // submitted, not yet admitted or finished while waiting
    private Exception? _fault;

    public InferenceEngine(IDecoderModel model, Tokenizer.Tokenizer tokenizer, EngineOptions options)
        : this(model, tokenizer, options, startLoop: true)
    {
    }

    /// <summary>Without its thread, for the scheduler benchmark, which calls <see cref="Iterate"/> itself.</summary>
    internal InferenceEngine(IDecoderModel model, Tokenizer.Tokenizer tokenizer, EngineOptions options, bool startLoop)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(options);
        _model = model;
        _tokenizer = tokenizer;
        _options = options;
        var physicalBlocks = model.Slots * ((model.Capacity + options.KvBlockTokens - 1) / options.KvBlockTokens);
        var budgetBlocks = options.KvCacheBytes > 0
            ? (int)Math.Min(physicalBlocks, options.KvCacheBytes / (model.KvBytesPerToken * options.KvBlockTokens))
            : physicalBlocks;
        if (budgetBlocks < 1)
            throw new ArgumentException($"the KV budget of {options.KvCacheBytes} bytes holds less than one block of {options.KvBlockTokens} tokens", nameof(options));
        _kv = new KvSlots(model.Slots, model.Capacity, options.KvBlockTokens, budgetBlocks);
        _workspace = new SamplingWorkspace(model.VocabSize);
        _healingLogits = new float[model.VocabSize];
        _running = new List<Sequence>(model.Slots);
        _finished = new List<Sequence>(model.Slots);
        _bySlot = new Sequence?[model.Slots];
        _rows = new SequenceStep[model.Slots];
        _rowTokens = new int[Math.Max(model.Slots, options.MaxBatchTokens)];
        _stopIds = [.. options.EosTokenIds];
        _metrics = new EngineMetrics(this);
        _thread = new Thread(Loop) { Name = "inference-engine", IsBackground = true };
        if (startLoop)
            _thread.Start();
        else
            _stopped.TrySetResult();
    }

    /// <summary>The KV budget in blocks, and the tokens it holds.</summary>
    public int TotalKvBlocks => _kv.TotalBlocks;

    public int Capacity => _model.Capacity;

    /// <summary>Tokens per KV block.</summary>
    public int KvBlockTokens => _kv.BlockTokens;

    /// <summary>Counts as of the latest iteration (read on any thread).</summary>
    public EngineSnapshot Snapshot
    {
        get
        {
            int used = Volatile.Read(ref _usedBlocks), cached = Volatile.Read(ref _cachedBlocks);
            return new EngineSnapshot(Volatile.Read(ref _runningCount), Volatile.Read(ref _waitingCount), used, cached, _kv.TotalBlocks - used - cached,
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
        if (Interlocked.Increment(ref _queued) > _options.MaxWaitingRequests)
        {
            Interlocked.Decrement(ref _queued);
            throw new EngineOverloadedException($"the queue is full ({_options.MaxWaitingRequests} requests waiting); try again later");
        }
        var sampling = request.Sampling;
        var output = new GenerationOutput(request.MaxTokens, sampling.Logprobs);
        var detokenizer = _tokenizer.CreateStreamingDetokenizer(skipSpecialTokens: true);
        detokenizer.StopStrings = request.StopStrings;
        var prompt = request.PromptTokens is int[] array ? array : request.PromptTokens.ToArray();
        var healed = request.HealPromptEnd && _tokenizer.Healing is { } healing ? healing.HealableEnd(prompt) ?? [] : [];
        var computed = prompt.AsSpan(0, prompt.Length - (healed.Length > 0 ? 1 : 0));
        detokenizer.KnownLeadingBytes = healed.Length;
        var sequence = new Sequence(Interlocked.Increment(ref _nextId), request, computed, healed,
            new Sampler(sampling, _model.VocabSize, computed), detokenizer, output, Stopwatch.GetTimestamp(), cancellationToken);
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
        if (prompt.Count + request.MaxTokens > _model.Capacity)
            throw new RequestValidationException(
                $"the prompt ({prompt.Count} tokens) plus max_tokens ({request.MaxTokens}) exceeds the context length of {_model.Capacity} tokens");
        if (_kv.BlocksFor(prompt.Count + 1) > _kv.TotalBlocks)
            throw new RequestValidationException(
                $"the prompt ({prompt.Count} tokens) does not fit the KV cache budget of {_kv.TotalBlocks * _kv.BlockTokens} tokens");
        foreach (var token in prompt)
        {
            if ((uint)token >= (uint)_model.VocabSize)
                throw new RequestValidationException($"token id {token} is outside the vocabulary (0..{_model.VocabSize - 1})");
        }
        if (request.Sampling.Validate() is { } problem)
            throw new RequestValidationException(problem);
        foreach (var id in request.StopTokenIds)
        {
            if ((uint)id >= (uint)_model.VocabSize)
                throw new RequestValidationException($"stop token id {id} is outside the vocabulary (0..{_model.VocabSize - 1})");
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
            _fault = e;
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
            _waiting.Enqueue(arrived, (-arrived.Request.Priority, arrived.Id));

        DropCancelled();
        RetireFinished();
        Admit();
        ReserveDecodeBlocks();
        RunPrefills();
        RunDecodes();
        RetireFinished();
        PublishSnapshot();
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
                _waiting.Enqueue(sequence, (-sequence.Request.Priority, sequence.Id));
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
        sequence.Output.Finish(FinishReason.Cancelled, UsageOf(sequence), null);
        sequence.Dispose();
    }

    // Highest priority first; a request that does not fit waits, and so does everything behind it.
    private void Admit()
    {
        while (_waiting.TryPeek(out var sequence, out _) && TryAssignSlot(sequence))
        {
            _waiting.Dequeue();
            if (sequence.Preemptions == 0)
                Interlocked.Decrement(ref _queued);
            _running.Add(sequence);
        }
    }

    private bool TryAssignSlot(Sequence sequence)
    {
        var tokens = sequence.Tokens.AsSpan(0, sequence.Length);
        var (source, common) = _kv.LongestPrefix(tokens);
        // Keep at least the last token to compute: its logits give the next token.
        var reuse = Math.Min(common, sequence.Length - 1);
        var takeOver = reuse > 0 && !_kv.IsOwned(source);
        var slot = takeOver ? source : _kv.FindFreeSlot(keep: reuse > 0 ? source : -1);
        if (slot < 0)
            return false;

        // Blocks for its tokens so far plus the next one. Taking a cached slot frees that slot's
        // blocks; beyond that, evict other cached KV (never the prefix being reused).
        var needed = _kv.BlocksFor(sequence.Length + 1);
        while (_kv.FreeBlocks + (_kv.IsCached(slot) ? _kv.BlocksFor(_kv.Length(slot)) : 0) < needed)
        {
            if (!_kv.EvictOne(keep: reuse > 0 ? source : -1))
                return false;
        }

        if (!takeOver && reuse > 0)
        {
            _model.CopyPrefix(source, slot, reuse);
            _kv.CopyTokens(source, slot, reuse);
        }
        _kv.Take(slot, reuse, sequence.Length + 1);
        sequence.Slot = slot;
        sequence.Computed = reuse;
        _bySlot[slot] = sequence;
        if (sequence.CachedPromptTokens < 0)
        {
            sequence.CachedPromptTokens = Math.Min(reuse, sequence.PromptLength);
            sequence.FirstAdmittedAt = Stopwatch.GetTimestamp();
            _metrics.PrefixHit(sequence.CachedPromptTokens);
        }
        return true;
    }

    // Each decoding sequence writes one more position; crossing into a new block needs a free
    // one: evict cached KV, else preempt the newest running sequence (possibly this one).
    private void ReserveDecodeBlocks()
    {
        for (var i = 0; i < _running.Count; i++)
        {
            var sequence = _running[i];
            var needed = sequence.Computed + 1;
            if (!sequence.IsDecoding || _kv.BlocksFor(needed) <= _kv.OwnedBlocks(sequence.Slot))
                continue;
            var preempted = false;
            while (_kv.FreeBlocks < 1 && !_kv.EvictOne(keep: -1))
            {
                var victim = Newest();
                Preempt(victim);
                preempted = true;
                if (victim == sequence)
                    break;
            }
            if (sequence.Slot >= 0)
                _kv.Reserve(sequence.Slot, needed);
            if (preempted)
                i = _running.IndexOf(sequence) is var at && at >= 0 ? at : i - 1; // the list shrank
        }
    }

    private Sequence Newest()
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
    private void Preempt(Sequence sequence)
    {
        _running.Remove(sequence);
        _kv.Release(sequence.Slot);
        _bySlot[sequence.Slot] = null;
        sequence.Slot = -1;
        sequence.Computed = 0;
        sequence.Preemptions++;
        _waiting.Enqueue(sequence, (-sequence.Request.Priority, sequence.Id));
        _metrics.Preempted();
    }

    private void RunPrefills()
    {
        var budget = _options.MaxBatchTokens;
        foreach (var sequence in _running)
        {
            if (sequence.IsDecoding)
                budget--;
        }

        for (var i = 0; i < _running.Count && budget > 0; i++)
        {
            var sequence = _running[i];
            if (sequence.IsDecoding || sequence.Output.Abandoned)
                continue;
            if (sequence.Computed == 0)
            {
                budget -= PrefillFreshGroup(i, budget);
                continue;
            }
            var chunk = Math.Min(Math.Min(sequence.Length - sequence.Computed, _options.PrefillChunkTokens), budget);
            _rows[0] = new SequenceStep(sequence.Computed, chunk);
            var logits = _model.Step(sequence.Slot, _rows.AsSpan(0, 1), sequence.Tokens.AsSpan(sequence.Computed, chunk));
            AfterPrefill(sequence, chunk, logits);
            budget -= chunk;
        }
    }

    // Fresh prompts (nothing computed yet) in adjacent slots, each short enough for the budget,
    // run as one right-padded batch. A long fresh prompt runs alone, in chunks.
    private int PrefillFreshGroup(int index, int budget)
    {
        var first = _running[index];
        var firstChunk = Math.Min(Math.Min(first.Length, _options.PrefillChunkTokens), budget);
        var group = 1;
        var used = firstChunk;
        if (firstChunk == first.Length)
        {
            for (var slot = first.Slot + 1; slot < _bySlot.Length; slot++)
            {
                var next = _bySlot[slot];
                if (next is null || next.Computed != 0 || next.IsDecoding || next.Length > _options.PrefillChunkTokens
                    || used + next.Length > budget || next.Output.Abandoned)
                    break;
                group++;
                used += next.Length;
            }
        }
        var written = 0;
        for (var r = 0; r < group; r++)
        {
            var sequence = _bySlot[first.Slot + r]!;
            var count = r == 0 ? firstChunk : sequence.Length;
            _rows[r] = new SequenceStep(0, count);
            sequence.Tokens.AsSpan(0, count).CopyTo(_rowTokens.AsSpan(written));
            written += count;
        }
        var logits = _model.Step(first.Slot, _rows.AsSpan(0, group), _rowTokens.AsSpan(0, written));
        var vocab = _model.VocabSize;
        for (var r = 0; r < group; r++)
        {
            var sequence = _bySlot[first.Slot + r]!;
            AfterPrefill(sequence, r == 0 ? firstChunk : sequence.Length, logits.Slice(r * vocab, vocab));
        }
        return used;
    }

    private void AfterPrefill(Sequence sequence, int chunk, ReadOnlySpan<float> logits)
    {
        _kv.Computed(sequence.Slot, sequence.Computed, sequence.Tokens.AsSpan(sequence.Computed, chunk));
        sequence.Computed += chunk;
        _metrics.PromptComputed(chunk);
        if (sequence.Computed == sequence.Length)
            Accept(sequence, logits[.._model.VocabSize]);
    }

    private void RunDecodes()
    {
        var lastSlot = -1;
        var decoding = 0;
        foreach (var sequence in _running)
        {
            if (sequence.IsDecoding && !sequence.Output.IsFinished)
            {
                lastSlot = Math.Max(lastSlot, sequence.Slot);
                decoding++;
            }
        }
        if (decoding == 0)
            return;

        // One row per slot from 0 to the last decoding one; other slots in that range get a
        // scratch row that writes past their valid KV.
        for (var slot = 0; slot <= lastSlot; slot++)
        {
            var sequence = _bySlot[slot];
            if (sequence is not null && sequence.IsDecoding && !sequence.Output.IsFinished)
            {
                _rows[slot] = new SequenceStep(sequence.Computed, 1);
                _rowTokens[slot] = sequence.Tokens[sequence.Length - 1];
            }
            else
            {
                _rows[slot] = new SequenceStep(_kv.ScratchPosition(slot), 1);
                _rowTokens[slot] = 0;
            }
        }
        var logits = _model.Step(0, _rows.AsSpan(0, lastSlot + 1), _rowTokens.AsSpan(0, lastSlot + 1));
        var vocab = _model.VocabSize;
        for (var slot = 0; slot <= lastSlot; slot++)
        {
            var sequence = _bySlot[slot];
            if (sequence is null || !sequence.IsDecoding || sequence.Output.IsFinished)
                continue;
            _kv.Computed(slot, sequence.Computed, sequence.Tokens.AsSpan(sequence.Computed, 1));
            sequence.Computed++;
            Accept(sequence, logits.Slice(slot * vocab, vocab));
        }
    }

    // Sample the next token, hand its text to the output, and decide whether the sequence ends.
    private void Accept(Sequence sequence, ReadOnlySpan<float> logits)
    {
        var healing = sequence.HealingLeft > 0;
        if (healing)
            logits = HealingLogits(sequence, logits);
        var sampled = sequence.Sampler.Sample(logits, _workspace, _alternatives.AsSpan(0, sequence.Request.Sampling.Logprobs), out var alternativeCount);
        var token = sampled.Id;
        sequence.Sampler.Accept(token);
        sequence.Tokens[sequence.Length++] = token;
        if (healing)
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
        sequence.Output.Append(token, text, sampled.Logprob, _alternatives.AsSpan(0, alternativeCount));

        if (isStopId)
            Complete(sequence, FinishReason.Stop, null);
        else if (sequence.Detokenizer.Stopped)
            Complete(sequence, FinishReason.Stop, sequence.Detokenizer.MatchedStop);
        else if (sequence.Generated - sequence.HealingTokens >= request.MaxTokens || sequence.Length >= _model.Capacity)
            Complete(sequence, FinishReason.Length, null);
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

    private void Complete(Sequence sequence, FinishReason reason, string? matchedStop)
    {
        if (reason != FinishReason.Stop || matchedStop is null)
        {
            // Whatever the detokenizer still held back (a possible stop-string start) is final text now.
            sequence.Output.AppendText(reason == FinishReason.Cancelled ? default : sequence.Detokenizer.Finish());
        }
        sequence.Output.Finish(reason, UsageOf(sequence), matchedStop);
        _metrics.Completed(Stopwatch.GetElapsedTime(sequence.SubmittedAt));
        _finished.Add(sequence);
    }

    private void RetireFinished()
    {
        foreach (var sequence in _finished)
        {
            if (sequence.Slot >= 0)
            {
                _kv.Release(sequence.Slot);
                _bySlot[sequence.Slot] = null;
                sequence.Slot = -1;
            }
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
        Volatile.Write(ref _usedBlocks, _kv.UsedBlocks);
        Volatile.Write(ref _cachedBlocks, _kv.CachedBlocks);
    }

    // On shutdown or failure every request still known gets its final event.
    private void FinishEverything()
    {
        foreach (var sequence in _running)
            Complete(sequence, FinishReason.Cancelled, null);
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
