namespace InferenceServer.Engine;

/// <summary>
/// Runs an <see cref="IterationPlan"/> on a model: the layout-specific half of an iteration below
/// the scheduler. <see cref="DenseExecutor"/> drives the dense graph's slots (one batched decode run
/// plus batch-1 runs for prefill chunks that continue a past); <see cref="PagedExecutor"/> runs the
/// paged graph once for everything. Called only on the engine's thread.
/// </summary>
internal interface IStepExecutor
{
    int VocabSize { get; }

    /// <summary>Most new tokens one iteration may carry.</summary>
    int MaxStepTokens { get; }

    /// <summary>(logit, id) pairs each row is reduced to on the device; 0 when every row's logits come back whole.</summary>
    int ReducedTopK { get; }

    /// <summary>
    /// Whether prefill chunks and decodes are separate model runs anyway. Then the engine plans an
    /// iteration in two halves (<see cref="PlanPart"/>), so that a prompt finished in the first
    /// half samples its first token and decodes its second in the same iteration.
    /// </summary>
    bool DecodesRunApart { get; }

    /// <summary>Adapters the model has loaded: a request may name ids 1 to this (0: none; the paged runners take none).</summary>
    int AdapterCount => 0;

    /// <summary>Whether <see cref="Interrupt"/> can end a run under way (then the scheduler may plan interruptible runs).</summary>
    bool CanInterrupt => false;

    /// <summary>Whether the runs started from now on may be ended by <see cref="Interrupt"/> (the loop thread, between runs).</summary>
    void AllowInterrupt(bool allowed)
    {
    }

    /// <summary>
    /// Any thread: ends the run under way (or the next, if none is) while interruption is allowed;
    /// that call returns a result with <see cref="StepResult.Interrupted"/> set.
    /// </summary>
    void Interrupt()
    {
    }

    /// <summary>Runs the plan's KV copies and rows; the result is valid until the next call.</summary>
    StepResult Execute(IterationPlan plan);

    /// <summary>
    /// Runs the plan's next model run from <paramref name="cursor"/> (0 on the first call) and
    /// returns what it brought back for the rows it computed (<see cref="StepResult.Ran"/>);
    /// <paramref name="cursor"/> is -1 once the plan is done. The engine applies each run as it
    /// ends, so a prompt's first token goes out when its own run does, not when the plan's last
    /// one does. An executor that runs a plan in one go runs all of it in the first call.
    /// </summary>
    StepResult ExecuteRun(IterationPlan plan, scoped ref int cursor)
    {
        cursor = -1;
        return Execute(plan);
    }
}

/// <summary>
/// What an iteration's runs brought back for the plan's rows that need logits: the whole logits row
/// (<see cref="Logits"/>), or, where the executor reduces on the device (<see cref="TopK"/> &gt; 0),
/// the arg-max, the best (logit, id) pairs and logsumexp of each row; plus what the runs cost.
/// Rows' logits come from two places: rows copied out of earlier runs of the iteration (at the
/// plan row's index in <c>copied</c>) and rows of the last run (at <c>lastRowOf[row]</c> in
/// <c>last</c>, when that is not negative), so the common case, a decode, copies nothing.
/// </summary>
internal readonly ref struct StepResult
{
    private readonly ReadOnlySpan<float> _copied, _last, _kept;
    private readonly ReadOnlySpan<int> _lastRowOf;
    private readonly ReadOnlySpan<bool> _ran;
    private readonly int _vocab, _keptStride;

    /// <param name="kept">Rows that checked drafts (<see cref="PlanRow.LogitsCount"/> &gt; 1): their logits, [LogitsCount, vocab] each, at the plan row's index times <paramref name="keptStride"/>.</param>
    /// <param name="ran">Per plan row, whether this result holds it (empty: every row).</param>
    public StepResult(int vocab, ReadOnlySpan<float> copied, ReadOnlySpan<float> last, ReadOnlySpan<int> lastRowOf, StepTimes times,
        ReadOnlySpan<float> kept = default, int keptStride = 0, ReadOnlySpan<bool> ran = default)
    {
        _ran = ran;
        _vocab = vocab;
        _copied = copied;
        _last = last;
        _lastRowOf = lastRowOf;
        _kept = kept;
        _keptStride = keptStride;
        Times = times;
    }

    /// <summary>A step that reduced each row on the device; <paramref name="logits"/> holds every row's whole logits (row order) or is empty.</summary>
    public StepResult(int vocab, ReadOnlySpan<float> logits, ReadOnlySpan<int> rowIndex, ReadOnlySpan<long> nextTokens, ReadOnlySpan<float> topLogits,
        ReadOnlySpan<long> topIds, ReadOnlySpan<float> logSumExp, int topK, StepTimes times)
        : this(vocab, default, logits, rowIndex, times)
    {
        NextTokens = nextTokens;
        TopLogits = topLogits;
        TopIds = topIds;
        LogSumExp = logSumExp;
        TopK = topK;
    }

    public StepTimes Times { get; }

    /// <summary>The run was ended early (<see cref="IStepExecutor.Interrupt"/>): no row of the plan was computed.</summary>
    public bool Interrupted { get; init; }

    /// <summary>(logit, id) pairs per row in <see cref="TopLogits"/> and <see cref="TopIds"/>; 0: no reductions, every row is whole.</summary>
    public int TopK { get; }
    public ReadOnlySpan<long> NextTokens { get; }
    public ReadOnlySpan<float> TopLogits { get; }
    public ReadOnlySpan<long> TopIds { get; }
    public ReadOnlySpan<float> LogSumExp { get; }

    /// <summary>The whole logits of a plan row's last position.</summary>
    public ReadOnlySpan<float> Logits(int row)
    {
        var last = row < _lastRowOf.Length ? _lastRowOf[row] : -1;
        return last >= 0 ? _last.Slice(last * _vocab, _vocab) : _copied.Slice(row * _vocab, _vocab);
    }

    /// <summary>Whether a run of this result computed the plan row (a result of a whole plan holds every row).</summary>
    public bool Ran(int row) => _ran.IsEmpty || _ran[row];

    /// <summary>The logits of a row that checked drafts: its last <paramref name="count"/> positions, [count, vocab], oldest first.</summary>
    public ReadOnlySpan<float> KeptLogits(int row, int count) => _kept.Slice(row * _keptStride, count * _vocab);
}

/// <summary>How long an iteration's model runs took: those with prompt tokens (and how many), and decode-only ones.</summary>
internal readonly record struct StepTimes(int PrefillTokens, TimeSpan Prefill, TimeSpan Decode);
