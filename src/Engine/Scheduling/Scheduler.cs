using InferenceServer.Engine.Kv;
using InferenceServer.Engine.Speculation;

namespace InferenceServer.Engine;

/// <summary>
/// Decides every iteration, for both KV layouts alike: it owns the waiting queue (highest priority
/// first, then arrival) and the running list, and <see cref="Schedule"/> returns a plan:
///   1. cancelled sequences leave (their KV released, cached for reuse);
///   2. waiting sequences are admitted while the layout finds them room (a cached prefix is reused,
///      not recomputed); a request that does not fit waits, and so does everything behind it;
///   3. every decoding sequence gets room for its next position; when there is none, the newest
///      running sequence is preempted (requeued to recompute its tokens later), possibly itself;
///   4. rows: every decode first (a token each, never held back by a long prompt; with speculation
///      on and few sequences decoding, plus tokens drafted by prompt lookup), then prefill chunks of
///      as many sequences as the token budget and the time budget allow.
/// The plan is committed when it is made: each row's sequence counts its tokens as computed and the
/// layout records them. The scheduler never runs the model and never samples; the engine tells it
/// when a sequence finishes (<see cref="Finish"/>) and what the steps cost (<see cref="Observe"/>).
/// Single-threaded and allocation-free per iteration.
/// </summary>
internal sealed class Scheduler
{
    private readonly KvLayout _kv;
    private readonly EngineOptions _options;
    private readonly StepCost _cost;
    private readonly int _reducedTopK;
    private readonly IterationPlan _plan;
    // Keyed by (-priority, arrival) in 64 bits, so that negating int.MinValue cannot wrap around.
    private readonly PriorityQueue<Sequence, (long Priority, long Id)> _waiting = new();
    private readonly List<Sequence> _running;
    private readonly List<Sequence> _keep = [];
    private readonly int _draftTokens;
    private readonly bool _interruptibleLonePrompts;
    private readonly int[] _draft;
    private long _admissions;

    // Prompt lookup tries suffixes of up to three tokens; after a shorter match the continuation
    // is right less often, so only one token is drafted (measured: longer drafts after short
    // matches lose more steps than they save).
    private const int DraftNgram = 3;
    private const int ShortMatchDrafts = 1;

    /// <param name="maxStepTokens">Most new tokens the executor takes in one iteration.</param>
    /// <param name="reducedTopK">(logit, id) pairs the executor's steps reduce each row to (0: it always returns whole logits rows).</param>
    /// <param name="draftTokens">Most tokens drafted for a decoding sequence per step (0: no speculation; the executor must return several logits rows per row otherwise).</param>
    /// <param name="interruptibleLonePrompts">Whether a prompt alone in the engine is planned without the time budget, as an interruptible plan (the executor must be able to end its run early).</param>
    public Scheduler(KvLayout kv, EngineOptions options, int maxStepTokens, int reducedTopK, int draftTokens = 0, bool interruptibleLonePrompts = false)
    {
        ArgumentNullException.ThrowIfNull(kv);
        ArgumentNullException.ThrowIfNull(options);
        _kv = kv;
        _options = options;
        _reducedTopK = reducedTopK;
        _cost = new StepCost(options.IterationTimeBudget);
        var tokenBudget = Math.Min(options.MaxBatchTokens, maxStepTokens);
        if (tokenBudget < 1)
            throw new ArgumentException("a step must carry at least one token", nameof(options));
        _plan = new IterationPlan(kv.MaxSequences, tokenBudget);
        _running = new List<Sequence>(kv.MaxSequences);
        ArgumentOutOfRangeException.ThrowIfNegative(draftTokens);
        _draftTokens = draftTokens;
        _draft = new int[draftTokens];
        _interruptibleLonePrompts = interruptibleLonePrompts;
    }

    /// <summary>Most tokens drafted for a sequence per step; 0 when speculation is off.</summary>
    public int DraftTokens => _draftTokens;

    public KvLayout Kv => _kv;

    /// <summary>Sequences admitted and not yet finished, in admission order.</summary>
    public IReadOnlyList<Sequence> Running => _running;
    public int WaitingCount => _waiting.Count;
    public bool IsIdle => _running.Count == 0 && _waiting.Count == 0;

    public void Enqueue(Sequence sequence) => _waiting.Enqueue(sequence, (-(long)sequence.Request.Priority, sequence.Id));

    /// <summary>Takes the next waiting sequence off the queue (on shutdown).</summary>
    public bool TryDequeueWaiting(out Sequence sequence) => _waiting.TryDequeue(out sequence!, out _);

    /// <summary>
    /// This iteration's plan, or one part of it (<see cref="PlanPart"/>); valid until the next call.
    /// </summary>
    public IterationPlan Schedule(PlanPart part = PlanPart.All)
    {
        var plan = _plan;
        plan.Clear();
        if (part != PlanPart.Decodes)
        {
            DropCancelled(plan);
            Admit(plan);
        }
        if (part != PlanPart.Prefills)
            ReserveDecodeRoom(plan);
        AddRows(plan, part);
        return plan;
    }

    /// <summary>The sequence is done (finished, or failed on shutdown): it leaves the running list and its KV is released.</summary>
    public void Finish(Sequence sequence)
    {
        _running.Remove(sequence);
        _kv.Release(sequence);
    }

    /// <summary>
    /// The step verified <paramref name="accepted"/> of the sequence's drafted tokens: their KV,
    /// written past its computed tokens, is valid, so they count as computed now. KV the step
    /// wrote for rejected drafts lies past <see cref="Sequence.Computed"/> and is overwritten by
    /// later steps; the layout never records it.
    /// </summary>
    public void AcceptDrafts(Sequence sequence, int accepted)
    {
        if (accepted <= 0)
            return;
        var start = sequence.Computed;
        sequence.Computed = start + accepted;
        _kv.Computed(sequence, start);
    }

    /// <summary>
    /// The executor ended the plan's run before it finished (an interruptible plan, see
    /// <see cref="IterationPlan.Interruptible"/>): its rows' tokens were not computed after all.
    /// </summary>
    public void Interrupted(IterationPlan plan)
    {
        foreach (var row in plan.Rows)
        {
            row.Sequence.Computed = row.PastLength;
            _kv.Computed(row.Sequence, row.PastLength); // nothing new: the layout forgets the row's tokens
        }
    }

    /// <summary>What the iteration's model runs took, to size the next prefill chunks within the time budget.</summary>
    public void Observe(int prefillTokens, TimeSpan prefill, TimeSpan decode)
    {
        if (prefillTokens > 0)
            _cost.Prefill(prefillTokens, prefill);
        if (decode > TimeSpan.Zero)
            _cost.Decode(decode);
    }

    private void DropCancelled(IterationPlan plan)
    {
        for (var i = _running.Count - 1; i >= 0; i--)
        {
            var sequence = _running[i];
            if (!sequence.CancelRequested)
                continue;
            _running.RemoveAt(i);
            _kv.Release(sequence);
            plan.DroppedRunning.Add(sequence);
        }
        if (_waiting.Count == 0 || !AnyWaitingCancelled())
            return;
        // Rare: rebuild the queue without the cancelled ones.
        _keep.Clear();
        while (_waiting.TryDequeue(out var sequence, out _))
        {
            if (sequence.CancelRequested)
                plan.DroppedWaiting.Add(sequence);
            else
                _keep.Add(sequence);
        }
        foreach (var sequence in _keep)
            Enqueue(sequence);
        _keep.Clear();
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

    private void Admit(IterationPlan plan)
    {
        while (_running.Count < _kv.MaxSequences && _waiting.TryPeek(out var sequence, out _) && _kv.TryAdmit(sequence, plan))
        {
            _waiting.Dequeue();
            _running.Add(sequence);
            sequence.AdmissionOrder = ++_admissions;
            if (sequence.CachedPromptTokens < 0)
            {
                sequence.CachedPromptTokens = Math.Min(sequence.Computed, sequence.PromptLength);
                sequence.FirstAdmittedAt = System.Diagnostics.Stopwatch.GetTimestamp();
                plan.Admitted.Add(sequence);
            }
        }
    }

    // A decoding sequence writes one more position; when the layout has no room, the newest
    // running sequence is preempted (possibly this one) until it has.
    private void ReserveDecodeRoom(IterationPlan plan)
    {
        for (var i = 0; i < _running.Count; i++)
        {
            var sequence = _running[i];
            if (!sequence.IsDecoding)
                continue;
            var preempted = false;
            while (!_kv.TryGrow(sequence, sequence.Computed + 1))
            {
                var victim = Newest();
                Preempt(victim, plan);
                preempted = true;
                if (victim == sequence)
                    break;
            }
            if (preempted)
                i = _running.IndexOf(sequence) is var at && at >= 0 ? at : i - 1; // the list shrank
        }
    }

    private Sequence Newest()
    {
        var newest = _running[0];
        foreach (var sequence in _running)
        {
            if (sequence.AdmissionOrder > newest.AdmissionOrder)
                newest = sequence;
        }
        return newest;
    }

    // The sequence gives up its KV (it stays cached, so it often comes back cheaply) and waits to
    // recompute its prompt and what it has generated so far.
    private void Preempt(Sequence sequence, IterationPlan plan)
    {
        _running.Remove(sequence);
        _kv.Release(sequence);
        sequence.Computed = 0;
        sequence.Preemptions++;
        Enqueue(sequence);
        plan.Preempted.Add(sequence);
    }

    private void AddRows(IterationPlan plan, PlanPart part)
    {
        // Decodes first: a token each (plus drafts, while few decode). Planned apart, the prefill
        // half leaves them their room.
        var decodesLater = 0;
        var drafting = _draftTokens > 0 && part != PlanPart.Prefills && DecodingCount() <= _options.SpeculativeMaxDecodes;
        foreach (var sequence in _running)
        {
            if (!sequence.IsDecoding)
                continue;
            if (part == PlanPart.Prefills)
                decodesLater++;
            else if (plan.Rows.Length < plan.MaxRows && plan.TokenCount < plan.MaxTokens)
            {
                var drafts = drafting ? Draft(sequence, plan.MaxTokens - plan.TokenCount - 1) : 0;
                if (drafts > 0)
                    CommitDrafts(plan, sequence, _draft.AsSpan(0, drafts));
                else
                    Commit(plan, sequence, 1, prefill: false);
            }
        }
        if (part == PlanPart.Decodes)
            return;
        // Then prefill chunks, as many sequences as the token and time budgets allow.
        var maxTokens = Math.Max(0, plan.MaxTokens - decodesLater);
        // Every row so far is a decode (or a decode with drafts).
        var prefillLeft = _cost.PrefillTokens(decoding: part == PlanPart.Prefills ? decodesLater : plan.Rows.Length, prompts: PromptsLeft());
        // A prompt alone keeps nobody waiting: no time budget, and the engine ends the run early
        // if that changes (it is cancelled, or someone arrives), so cancellations and newcomers
        // still wait no longer than they would for a budgeted chunk.
        var lone = _interruptibleLonePrompts && _cost.Enabled && part == PlanPart.Prefills && _running.Count == 1 && _waiting.Count == 0
            && decodesLater == 0 && plan.Rows.Length == 0;
        if (lone)
            prefillLeft = int.MaxValue;
        foreach (var sequence in _running)
        {
            if (plan.Rows.Length == plan.MaxRows || plan.TokenCount >= maxTokens || prefillLeft == 0)
                break;
            // Decodes already have their row (and those the budget left out wait for the next iteration).
            if (sequence.IsDecoding || sequence.Computed == sequence.Length || sequence.Output.Abandoned)
                continue;
            var chunk = Math.Min(Math.Min(Math.Min(sequence.Length - sequence.Computed, _options.PrefillChunkTokens), maxTokens - plan.TokenCount), prefillLeft);
            prefillLeft -= chunk;
            Commit(plan, sequence, chunk, prefill: true);
        }
        if (lone && plan.Rows.Length == 1)
        {
            plan.Interruptible = true;
            plan.PredictedSeconds = _cost.PrefillSeconds(plan.Rows[0].TokenCount);
        }
    }

    // Sequences waiting for prompt tokens: admitted ones with some left, and the waiting queue.
    private int PromptsLeft()
    {
        var prompts = _waiting.Count;
        foreach (var sequence in _running)
        {
            if (!sequence.IsDecoding && sequence.Computed < sequence.Length && !sequence.Output.Abandoned)
                prompts++;
        }
        return prompts;
    }

    private int DecodingCount()
    {
        var count = 0;
        foreach (var sequence in _running)
        {
            if (sequence.IsDecoding)
                count++;
        }
        return count;
    }

    // Drafts into _draft for a plainly decoding sequence (no healing mask to honour), leaving its
    // last token's step room to end at max_tokens or the context's end, and reserves KV for the
    // drafted positions; returns how many (0: a plain decode).
    private int Draft(Sequence sequence, int tokenRoom)
    {
        if (sequence.HealingLeft > 0 || sequence.Request.PrefillOnly)
            return 0;
        var room = Math.Min(Math.Min(_draftTokens, tokenRoom), Math.Min(sequence.TokensLeft - 1, _kv.Capacity - sequence.Length - 1));
        if (room <= 0)
            return 0;
        sequence.Drafter ??= new PromptLookupDrafter(DraftNgram, 1, sequence.Tokens.Length);
        var drafts = sequence.Drafter.Propose(sequence.Tokens.AsSpan(0, sequence.Length), _draft.AsSpan(0, room), out var matched);
        if (matched < DraftNgram)
            drafts = Math.Min(drafts, ShortMatchDrafts);
        // Drafts never preempt anyone: without a free block for them the step is a plain decode.
        return drafts > 0 && _kv.TryGrow(sequence, sequence.Computed + 1 + drafts) ? drafts : 0;
    }

    // The newest token and the drafts run; only the newest counts as computed until the engine
    // has verified the drafts (AcceptDrafts), so the layout records accepted tokens only.
    private void CommitDrafts(IterationPlan plan, Sequence sequence, ReadOnlySpan<int> draft)
    {
        var start = sequence.Computed;
        plan.AddDraftRow(sequence, draft);
        sequence.Computed = start + 1;
        _kv.Computed(sequence, start);
    }

    private void Commit(IterationPlan plan, Sequence sequence, int count, bool prefill)
    {
        var start = sequence.Computed;
        plan.AddRow(sequence, count, prefill);
        if (start + count == sequence.Length && sequence.NeedsLogitsRow(_reducedTopK))
            plan.NeedsLogitsRows = true;
        sequence.Computed = start + count;
        _kv.Computed(sequence, start);
    }
}

/// <summary>Which rows a plan holds.</summary>
internal enum PlanPart
{
    /// <summary>A whole iteration: cancellations, admissions, decodes, then prefill chunks.</summary>
    All,

    /// <summary>
    /// The first half of an iteration whose executor runs prefill chunks and decodes apart anyway
    /// (<see cref="IStepExecutor.DecodesRunApart"/>): cancellations, admissions and prefill chunks,
    /// leaving the token and time budgets room for the decodes.
    /// </summary>
    Prefills,

    /// <summary>The second half: room for the next position, then every decode, those of prompts the first half finished included.</summary>
    Decodes,
}
