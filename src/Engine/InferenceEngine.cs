using System.Collections.Concurrent;
using System.Diagnostics;
using InferenceServer.Engine.Kv;
using InferenceServer.Engine.Sampling;
using InferenceServer.Engine.Speculation;
using InferenceServer.Model;

namespace InferenceServer.Engine;

/// <summary>
/// One model's continuous-batching loop. Requests are submitted from any thread; one dedicated
/// thread owns all scheduling state and runs iterations, each one way down and back:
/// <code>
///   plan   = scheduler.Schedule()     who leaves, who is admitted or preempted, every row's tokens
///   result = executor.Execute(plan)   the model runs (one on the paged path, a few on the dense one)
///   Apply(plan, result)               sample, check stops, stream text out, finish sequences
/// </code>
/// The <see cref="Scheduler"/> owns the queues and the KV bookkeeping (<see cref="Kv.KvLayout"/>)
/// and never calls back up; the executor (<see cref="DenseExecutor"/> or <see cref="PagedExecutor"/>)
/// only runs what the plan says. The engine is what sees requests: it validates them, samples, and
/// writes every output.
/// </summary>
public sealed class InferenceEngine : IInferenceEngine, IAbandonListener
{
    private readonly Scheduler _scheduler;
    private readonly IStepExecutor _executor;
    private readonly Tokenizer.Tokenizer _tokenizer;
    private readonly EngineOptions _options;
    private readonly EngineMetrics _metrics;
    private readonly SamplingWorkspace _workspace;
    private readonly ConcurrentQueue<Sequence> _incoming = new();
    private readonly SemaphoreSlim _wake = new(0);
    private readonly Thread _thread;
    private readonly CancellationTokenSource _stop = new();
    private readonly TaskCompletionSource _stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly HashSet<int> _stopIds;

    // Per-iteration scratch, sized once.
    private readonly TopLogprob[] _alternatives = new TopLogprob[20];
    private readonly float[] _healingLogits;
    private readonly int[] _healingIds = new int[256];

    private readonly bool _stepped; // no thread: whoever made it calls Iterate
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
        : this(model, tokenizer, options, startLoop: true)
    {
    }

    /// <summary>Without its thread (<paramref name="startLoop"/> false), for tests and the scheduler benchmark, which call <see cref="Iterate"/> themselves.</summary>
    internal InferenceEngine(IDecoderModel model, Tokenizer.Tokenizer tokenizer, EngineOptions options, bool startLoop)
        : this(Dense(model, options), tokenizer, options, startLoop)
    {
    }

    /// <inheritdoc cref="InferenceEngine(IDecoderModel, Tokenizer.Tokenizer, EngineOptions, bool)"/>
    internal InferenceEngine(IPagedModel model, Tokenizer.Tokenizer tokenizer, EngineOptions options, bool startLoop)
        : this(Paged(model, options), tokenizer, options, startLoop)
    {
    }

    /// <summary>Over any scheduler and executor; without its thread (<paramref name="startLoop"/> false) the caller steps it with <see cref="Iterate"/>.</summary>
    internal InferenceEngine((Scheduler Scheduler, IStepExecutor Executor) core, Tokenizer.Tokenizer tokenizer, EngineOptions options, bool startLoop)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(options);
        _tokenizer = tokenizer;
        _options = options;
        (_scheduler, _executor) = core;
        _workspace = new SamplingWorkspace(_executor.VocabSize);
        _healingLogits = new float[_executor.VocabSize];
        _stopIds = [.. options.EosTokenIds];
        _metrics = new EngineMetrics(this);
        _thread = new Thread(Loop) { Name = "inference-engine", IsBackground = true };
        _stepped = !startLoop;
        if (startLoop)
            _thread.Start();
        else
            _stopped.TrySetResult();
    }

    // The dense path: KV slots, the batched decode run plus prefill runs.
    private static (Scheduler, IStepExecutor) Dense(IDecoderModel model, EngineOptions options)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        var layout = new DenseSlotLayout(model.Slots, model.Capacity, options.KvBlockTokens, options.KvCacheBytes, model.KvBytesPerToken);
        ArgumentOutOfRangeException.ThrowIfNegative(options.SpeculativeDraftTokens, nameof(options.SpeculativeDraftTokens));
        var executor = new DenseExecutor(model, layout, options.MaxBatchTokens, options.SpeculativeDraftTokens);
        return (new Scheduler(layout, options, executor.MaxStepTokens, executor.ReducedTopK, options.SpeculativeDraftTokens,
            interruptibleLonePrompts: options.InterruptibleLonePrompts && executor.CanInterrupt), executor);
    }

    // The paged path: a block pool, one run per iteration.
    private static (Scheduler, IStepExecutor) Paged(IPagedModel model, EngineOptions options)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        var layout = new PagedBlockLayout(model.KvBlocks, model.BlockTokens, model.Capacity, model.MaxSequences, model.MaxBlocksPerSequence);
        var executor = new PagedExecutor(model, layout);
        // No speculation on the paged path: its step returns one logits row per sequence.
        return (new Scheduler(layout, options, executor.MaxStepTokens, executor.ReducedTopK), executor);
    }

    /// <summary>What stopped the loop, when a model step or the loop itself threw; null while it runs or after a clean stop.</summary>
    public Exception? Fault => Volatile.Read(ref _fault);

    /// <summary>Completes when the loop has stopped, cleanly or after a fault.</summary>
    public Task Stopped => _stopped.Task;

    internal EngineMetrics Metrics => _metrics;

    /// <summary>The engine's instruments (meter "InferenceServer.Engine"), for exporters.</summary>
    public System.Diagnostics.Metrics.Meter Meter => _metrics.Meter;

    /// <summary>The KV budget in blocks, and the tokens it holds.</summary>
    public int TotalKvBlocks => _scheduler.Kv.TotalBlocks;

    public int Capacity => _scheduler.Kv.Capacity;

    /// <summary>Most tokens prompt lookup drafts per step; 0 when speculation is off (always on the paged path).</summary>
    public int SpeculativeDraftTokens => _scheduler.DraftTokens;

    /// <summary>Tokens per KV block.</summary>
    public int KvBlockTokens => _scheduler.Kv.BlockTokens;

    /// <summary>Counts as of the latest iteration (read on any thread).</summary>
    public EngineSnapshot Snapshot
    {
        get
        {
            int used = Volatile.Read(ref _usedBlocks), cached = Volatile.Read(ref _cachedBlocks);
            return new EngineSnapshot(Volatile.Read(ref _runningCount), Volatile.Read(ref _waitingCount), used, cached, _scheduler.Kv.TotalBlocks - used - cached,
                Volatile.Read(ref _iterations), Volatile.Read(ref _cancellations), Volatile.Read(ref _lateCancellations))
            {
                InterruptedPrefills = Volatile.Read(ref _interruptedPrefills),
            };
        }
    }

    private int _runningCount, _waitingCount, _usedBlocks, _cachedBlocks;
    private long _iterations, _cancellations, _lateCancellations, _interruptedPrefills;

    // While a lone prompt's interruptible run is under way: its output, and until when (a
    // Stopwatch timestamp) an arrival is worth ending it for.
    private GenerationOutput? _interruptibleOutput;
    private long _interruptibleWorthUntil;

    // Stopwatch timestamps of the current and the previous iteration's start: a sequence
    // abandoned after the previous start is freed within one iteration of its cancellation.
    private long _iterationStart, _previousIterationStart;

    /// <summary>
    /// Checks a request against this engine's model, once: the prompt is not empty and, with
    /// max_tokens, fits the context length and the KV budget; every token id is in the vocabulary;
    /// sampling parameters, stop ids and stop strings are valid. Throws
    /// <see cref="RequestValidationException"/> (code <see cref="RequestErrorCode.InvalidArgument"/>)
    /// with a message for the client naming the first problem.
    /// </summary>
    public ValidatedRequest Validate(GenerationRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        var prompt = request.PromptTokens;
        var capacity = _scheduler.Kv.Capacity;
        int vocab = _executor.VocabSize, totalBlocks = _scheduler.Kv.TotalBlocks;
        if (prompt is null || prompt.Count == 0)
            throw new RequestValidationException("the prompt is empty");
        if (request.MaxTokens < 1)
            throw new RequestValidationException($"max_tokens must be at least 1, got {request.MaxTokens}");
        if (prompt.Count >= capacity)
            throw new RequestValidationException($"the prompt is {prompt.Count} tokens; this model's context length is {capacity}");
        // In 64 bits: a client's max_tokens near int.MaxValue must not wrap around and pass.
        if ((long)prompt.Count + request.MaxTokens > capacity)
            throw new RequestValidationException(
                $"the prompt ({prompt.Count} tokens) plus max_tokens ({request.MaxTokens}) exceeds this model's context length of {capacity} tokens");
        if (request.Sampling.Validate() is { } problem)
            throw new RequestValidationException(problem);
        foreach (var id in request.StopTokenIds)
        {
            if ((uint)id >= (uint)vocab)
                throw new RequestValidationException($"stop token id {id} is outside the vocabulary");
        }
        if (_scheduler.Kv.BlocksFor(prompt.Count + 1) > totalBlocks)
            throw new RequestValidationException(
                $"the prompt ({prompt.Count} tokens) does not fit the KV cache budget of {totalBlocks * _scheduler.Kv.BlockTokens} tokens");
        foreach (var token in prompt)
        {
            if ((uint)token >= (uint)vocab)
                throw new RequestValidationException($"token id {token} is outside the vocabulary (0..{vocab - 1})");
        }
        if (request.AdapterId != 0 && (uint)request.AdapterId > (uint)_executor.AdapterCount)
        {
            throw new RequestValidationException(_executor.AdapterCount == 0
                ? $"adapter id {request.AdapterId}: this model has no adapters loaded"
                : $"adapter id {request.AdapterId} is not loaded (1..{_executor.AdapterCount})");
        }
        if (request.StopStrings.Any(string.IsNullOrEmpty))
            throw new RequestValidationException("stop strings cannot be empty");
        return new ValidatedRequest(this, request, prompt is int[] array ? array : [.. prompt]);
    }

    /// <summary><see cref="Validate"/>, then <see cref="Submit(ValidatedRequest, CancellationToken)"/>.</summary>
    public GenerationOutput Submit(GenerationRequest request, CancellationToken cancellationToken = default) =>
        Submit(Validate(request), cancellationToken);

    /// <summary>
    /// Queues a validated request and returns its output. Fails at once, queuing nothing, when the
    /// queue is full (<see cref="EngineOverloadedException"/>) or the engine has stopped
    /// (<see cref="EngineStoppedException"/>). Cancelling <paramref name="cancellationToken"/> (or
    /// leaving the output unread) ends the generation at the next iteration.
    /// </summary>
    public GenerationOutput Submit(ValidatedRequest validated, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(validated);
        if (validated.Engine != this)
            throw new ArgumentException("the request was validated by another engine", nameof(validated));
        if (_fault is not null || _stop.IsCancellationRequested)
            throw new EngineStoppedException(_fault is null ? "the engine is stopping" : $"the engine stopped after an error: {_fault.Message}");
        // Everything that can fail happens before the queue slot is taken, so a request that
        // fails here has nothing to give back.
        var request = validated.Request;
        var sampling = request.Sampling;
        var output = new GenerationOutput(request.MaxTokens, sampling.Logprobs) { Listener = this };
        var detokenizer = _tokenizer.CreateStreamingDetokenizer(skipSpecialTokens: true);
        detokenizer.StopStrings = request.StopStrings;
        var prompt = validated.Prompt;
        var healed = request.HealPromptEnd && _tokenizer.Healing is { } healing ? healing.HealableEnd(prompt) ?? [] : [];
        var computed = prompt.AsSpan(0, prompt.Length - (healed.Length > 0 ? 1 : 0));
        detokenizer.KnownLeadingBytes = healed.Length;
        var sequence = new Sequence(Interlocked.Increment(ref _nextId), request, computed, healed,
            new Sampler(sampling, _executor.VocabSize, computed), detokenizer, output, Stopwatch.GetTimestamp(), cancellationToken);
        if (Interlocked.Increment(ref _queued) > _options.MaxWaitingRequests)
        {
            Interlocked.Decrement(ref _queued);
            sequence.Dispose();
            throw new EngineOverloadedException($"the queue is full ({_options.MaxWaitingRequests} requests waiting); try again later");
        }
        _incoming.Enqueue(sequence);
        _metrics.Submitted(prompt.Length);
        _wake.Release();
        // A lone prompt's run with more than a budget of work left would keep this one waiting.
        if (Volatile.Read(ref _interruptibleOutput) is not null && Stopwatch.GetTimestamp() < Volatile.Read(ref _interruptibleWorthUntil))
            _executor.Interrupt();
        return output;
    }

    void IAbandonListener.Abandoned(GenerationOutput output)
    {
        // The lone prompt's own cancellation: nobody wants what its run computes.
        if (ReferenceEquals(Volatile.Read(ref _interruptibleOutput), output))
            _executor.Interrupt();
    }

    private void Loop()
    {
        try
        {
            while (!_stop.IsCancellationRequested)
            {
                if (_scheduler.IsIdle && _incoming.IsEmpty)
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

    /// <summary>One iteration: the scheduler plans, the executor runs the plan, the engine applies the result (twice, prefills then decodes, when the executor runs them apart).</summary>
    internal void Iterate()
    {
        _previousIterationStart = _iterationStart;
        _iterationStart = Stopwatch.GetTimestamp();
        Volatile.Write(ref _iterations, _iterations + 1);
        while (_incoming.TryDequeue(out var arrived))
            _scheduler.Enqueue(arrived);

        // An executor that runs prefills and decodes apart gets them as two plans: a prompt the
        // first finishes decodes in the second, as one run could not have it do.
        var ranModel = _executor.DecodesRunApart
            ? StepRunByRun(PlanPart.Prefills) | Step(PlanPart.Decodes)
            : Step(PlanPart.All);
        PublishSnapshot();
        if (ranModel) // an iteration with nothing to run only waited
            _metrics.Iteration(Stopwatch.GetElapsedTime(_iterationStart));
    }

    // Plan, execute, apply.
    private bool Step(PlanPart part)
    {
        var plan = _scheduler.Schedule(part);
        // The queue changes first: a cancelled request's final event and a queue place given back
        // need not wait for the model run.
        Settle(plan);
        var result = _executor.Execute(plan);
        Apply(plan, result);
        return plan.Rows.Length > 0;
    }

    // Plan, then execute and apply one model run at a time: prompts prefilled in one half get
    // their first tokens as their own runs end, not all together when the last run does.
    private bool StepRunByRun(PlanPart part)
    {
        var plan = _scheduler.Schedule(part);
        Settle(plan);
        if (plan.Interruptible)
            AllowInterrupt(plan);
        try
        {
            var cursor = 0;
            do
            {
                var result = _executor.ExecuteRun(plan, ref cursor);
                if (result.Interrupted)
                {
                    _scheduler.Interrupted(plan);
                    Volatile.Write(ref _interruptedPrefills, _interruptedPrefills + 1);
                    break;
                }
                Apply(plan, result);
            }
            while (cursor >= 0);
        }
        finally
        {
            if (plan.Interruptible)
            {
                Volatile.Write(ref _interruptibleOutput, null);
                _executor.AllowInterrupt(false);
            }
        }
        return plan.Rows.Length > 0;
    }

    // A lone prompt's plan (see EngineOptions.InterruptibleLonePrompts): from here until its run
    // ends, its cancellation, or an arrival while more than a budget of the run is left, ends it.
    private void AllowInterrupt(IterationPlan plan)
    {
        var output = plan.Rows[0].Sequence.Output;
        var worthSeconds = plan.PredictedSeconds - _options.IterationTimeBudget.TotalSeconds;
        var worthUntil = plan.PredictedSeconds == 0 ? long.MaxValue // no measurement yet: any arrival ends it
            : Stopwatch.GetTimestamp() + (long)(worthSeconds * Stopwatch.Frequency);
        _executor.AllowInterrupt(true);
        Volatile.Write(ref _interruptibleWorthUntil, worthUntil);
        Volatile.Write(ref _interruptibleOutput, output);
        // What happened since the plan was made, before either hook could see it.
        if (output.Abandoned || !_incoming.IsEmpty)
            _executor.Interrupt();
    }

    private void Apply(IterationPlan plan, StepResult result)
    {
        var times = result.Times;
        _scheduler.Observe(times.PrefillTokens, times.Prefill, times.Decode);
        var rows = plan.Rows;
        for (var r = 0; r < rows.Length; r++)
        {
            if (!result.Ran(r))
                continue; // a later run of the plan computes it
            var row = rows[r];
            var sequence = row.Sequence;
            if (row.Prefill)
                _metrics.PromptComputed(row.TokenCount);
            if (row.LogitsCount == 0)
                continue; // a prefill chunk short of the prompt's end samples nothing
            if (row.LogitsCount > 1)
            {
                AcceptDrafts(sequence, result.KeptLogits(r, row.LogitsCount), plan.Tokens.Slice(row.TokenOffset + 1, row.LogitsCount - 1));
                continue;
            }
            if (result.TopK == 0 || (plan.NeedsLogitsRows && sequence.NeedsLogitsRow(result.TopK)))
                Accept(sequence, result.Logits(r));
            else
                AcceptReduced(sequence, (int)result.NextTokens[r], result.TopLogits.Slice(r * result.TopK, result.TopK), result.TopIds.Slice(r * result.TopK, result.TopK), result.LogSumExp[r]);
        }
    }

    // What the scheduler decided about the queues: first admissions, preemptions, cancellations.
    private void Settle(IterationPlan plan)
    {
        foreach (var sequence in plan.DroppedRunning)
        {
            CountCancellation(sequence);
            Complete(sequence, FinishReason.Cancelled, null);
        }
        foreach (var sequence in plan.DroppedWaiting)
        {
            CountCancellation(sequence);
            FinishWaiting(sequence);
        }
        foreach (var sequence in plan.Admitted)
        {
            Interlocked.Decrement(ref _queued);
            _metrics.Admitted(Stopwatch.GetElapsedTime(sequence.SubmittedAt, sequence.FirstAdmittedAt));
            _metrics.PrefixHit(sequence.CachedPromptTokens);
        }
        foreach (var _ in plan.Preempted)
            _metrics.Preempted();
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

    // Never admitted since its submission (or since a preemption): only its output to finish.
    private void FinishWaiting(Sequence sequence)
    {
        if (sequence.CachedPromptTokens < 0)
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

    // Sample the next token from the logits of the sequence's last computed position.
    private void Accept(Sequence sequence, ReadOnlySpan<float> logits)
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

    // Verify a decode step's drafts: each token the sampler chooses goes out through Emit, as a
    // plain decode's would (stops, limits and cancellation apply per token, and what follows an
    // end is dropped); the accepted drafts' KV, computed by the step, becomes the sequence's.
    private void AcceptDrafts(Sequence sequence, ReadOnlySpan<float> logits, ReadOnlySpan<int> draft)
    {
        var sink = new EmittingSink(this, sequence);
        var accepted = DraftVerifier.Verify(sequence.Sampler, _workspace, logits, draft, _alternatives.AsSpan(0, sequence.Request.Sampling.Logprobs), ref sink);
        _metrics.Drafted(draft.Length, accepted);
        if (sink.Running)
            _scheduler.AcceptDrafts(sequence, accepted);
    }

    private struct EmittingSink(InferenceEngine engine, Sequence sequence) : IVerifiedTokenSink
    {
        public bool Running { get; private set; } = true;

        // A consumer that gave up gets nothing more; the next iteration releases the sequence.
        public bool Take(SampledToken token, int alternativesWritten)
        {
            Running = engine.Emit(sequence, token, alternativesWritten);
            return Running && !sequence.CancelRequested;
        }
    }

    /// <summary>
    /// Chooses a token for a sequence that <see cref="Sequence.NeedsLogitsRow"/> says needs nothing more than
    /// what a paged step reduced: greedy takes the step's arg-max, top-k sampling draws from the
    /// best logits; log-probabilities are those logits less the row's logsumexp.
    /// </summary>
    private void AcceptReduced(Sequence sequence, int argMax, ReadOnlySpan<float> topLogits, ReadOnlySpan<long> topIds, float logSumExp)
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

    // Hand a chosen token to the sequence's output, and decide whether the sequence ends (false: it did).
    private bool Emit(Sequence sequence, SampledToken sampled, int alternativeCount)
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
        else if (sequence.TokensLeft <= 0 || sequence.Length >= _scheduler.Kv.Capacity)
            Complete(sequence, FinishReason.Length, null);
        else
            return true;
        return false;
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
        Retire(sequence);
    }

    private void Retire(Sequence sequence)
    {
        _scheduler.Finish(sequence);
        sequence.Dispose();
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
        Volatile.Write(ref _runningCount, _scheduler.Running.Count);
        Volatile.Write(ref _waitingCount, _scheduler.WaitingCount + _incoming.Count);
        Volatile.Write(ref _usedBlocks, _scheduler.Kv.UsedBlocks);
        Volatile.Write(ref _cachedBlocks, _scheduler.Kv.CachedBlocks);
    }

    // On shutdown every request still known gets its final event; after a fault, the fault.
    private void FinishEverything()
    {
        while (_scheduler.Running.Count > 0)
            FailOrCancel(_scheduler.Running[^1]);
        while (_scheduler.TryDequeueWaiting(out var sequence))
            FinishWaiting(sequence);
        while (_incoming.TryDequeue(out var sequence))
            FinishWaiting(sequence);
        PublishSnapshot();
    }

    private void FailOrCancel(Sequence sequence)
    {
        if (_fault is { } fault)
        {
            sequence.Output.Fail(fault);
            Retire(sequence);
        }
        else
            Complete(sequence, FinishReason.Cancelled, null);
    }

    /// <summary>Stops the loop; requests still running or waiting end as cancelled.</summary>
    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        _wake.Release();
        await _stopped.Task.ConfigureAwait(false);
        if (_stepped)
            FinishEverything(); // what the loop's thread does when it stops
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
    long Iterations, long Cancellations, long LateCancellations)
{
    /// <summary>Lone prompts' prefill runs ended early (cancelled, or another request arrived); their work was dropped.</summary>
    public long InterruptedPrefills { get; init; }
}
