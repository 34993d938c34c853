using System.Diagnostics;
using InferenceServer.Engine.Kv;
using InferenceServer.Model;

namespace InferenceServer.Engine;

/// <summary>
/// The dense graph's slots, run as GroupQueryAttention on the CPU allows: prefill chunks first
/// (whole fresh prompts in adjacent slots as one right-padded batch, any other chunk alone), then
/// every single-token row (decodes) in one batched run over the slots from the first decoding one to the last, with
/// scratch rows for the slots in that range that are not. Logits rows a prefill run produced are
/// copied out before the next run reuses the model's output; the decode run's are read in place.
/// A decode row that carries drafted tokens runs alone (the model's multi-position step), and the
/// logits of all its positions are copied out.
/// </summary>
internal sealed class DenseExecutor : IStepExecutor
{
    private readonly IDecoderModel _model;
    private readonly KvSlots _kv;
    private readonly int _vocab;
    private readonly SequenceStep[] _steps;
    private readonly int[] _stepTokens;
    private readonly int[] _stepAdapters; // per run row: its sequence's adapter (0: none)
    private readonly int[] _rowBySlot;   // plan row that a slot runs this iteration, else -1
    private readonly int[] _lastRowOf;   // per plan row: its row in the decode run, or -1
    private readonly float[] _copied;    // per plan row: logits copied out of a prefill run
    private readonly float[] _kept;      // per plan row: the logits of a row that checks drafts
    private readonly int _keptStride;
    private readonly bool[] _ran;        // per plan row: computed by the runs of the current call
    private int _firstDecodeSlot, _lastDecodeSlot; // the slots with decode rows span these, found as the slots are walked

    /// <param name="maxDrafts">Most drafted tokens a row carries (0: none; otherwise the model must keep several positions' logits).</param>
    public DenseExecutor(IDecoderModel model, DenseSlotLayout layout, int maxStepTokens, int maxDrafts = 0)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(layout);
        _model = model;
        _kv = layout.Slots;
        _vocab = model.VocabSize;
        MaxStepTokens = maxStepTokens;
        _steps = new SequenceStep[model.Slots];
        _stepTokens = new int[Math.Max(model.Slots, maxStepTokens)];
        _stepAdapters = new int[model.Slots];
        AdapterCount = model.AdapterCount;
        _rowBySlot = new int[model.Slots];
        _ran = new bool[model.Slots];
        _lastRowOf = new int[model.Slots];
        _copied = new float[model.Slots * _vocab];
        ArgumentOutOfRangeException.ThrowIfNegative(maxDrafts);
        if (maxDrafts > 0 && !model.HasMultiPositionLogits)
            throw new ArgumentException("speculative decoding needs a model that returns several positions' logits (a graph with the logits_to_keep input; build-model --upgrade-graph adds it)", nameof(maxDrafts));
        _keptStride = maxDrafts > 0 ? (maxDrafts + 1) * _vocab : 0;
        _kept = new float[model.Slots * _keptStride];
    }

    public int VocabSize => _vocab;
    public int MaxStepTokens { get; }
    public bool DecodesRunApart => true;
    public int ReducedTopK => 0;
    public int AdapterCount { get; }
    public bool CanInterrupt => _model.CanInterrupt;
    public void AllowInterrupt(bool allowed) => _model.AllowInterrupt(allowed);
    public void Interrupt() => _model.Interrupt();

    public StepResult Execute(IterationPlan plan)
    {
        var cursor = 0;
        return Run(plan, ref cursor, wholePlan: true);
    }

    public StepResult ExecuteRun(IterationPlan plan, scoped ref int cursor) => Run(plan, ref cursor, wholePlan: false);

    // Slots in order from the cursor: each prefill run as its slot comes up, then the batched decode
    // run. A whole plan runs them all; otherwise a call returns after each prefill run, its rows
    // marked in _ran, with the cursor on the next slot, and the last call runs the decodes.
    private StepResult Run(IterationPlan plan, scoped ref int cursor, bool wholePlan)
    {
        var rows = plan.Rows;
        if (cursor == 0)
        {
            foreach (var copy in plan.Copies)
                _model.CopyPrefix(copy.FromSlot, copy.ToSlot, copy.Length);
            if (rows.Length == 0)
            {
                cursor = -1;
                return default;
            }
            _rowBySlot.AsSpan().Fill(-1);
            _lastRowOf.AsSpan(0, rows.Length).Fill(-1);
            for (var r = 0; r < rows.Length; r++)
                _rowBySlot[rows[r].Sequence.KvIndex] = r; // the slot
            _firstDecodeSlot = _lastDecodeSlot = -1;
        }
        _ran.AsSpan(0, rows.Length).Clear();

        var prefillTokens = 0;
        TimeSpan prefill = TimeSpan.Zero, decode = TimeSpan.Zero;
        for (var slot = cursor; slot < _rowBySlot.Length; slot++)
        {
            var r = _rowBySlot[slot];
            if (r < 0)
                continue;
            var row = rows[r];
            if (row.LogitsCount > 1)
            {
                var verifyStarted = Stopwatch.GetTimestamp();
                var kept = _model.StepKeepingLogits(slot, new SequenceStep(row.PastLength, row.TokenCount),
                    plan.Tokens.Slice(row.TokenOffset, row.TokenCount), row.LogitsCount, row.Sequence.AdapterId);
                kept.CopyTo(_kept.AsSpan(r * _keptStride));
                decode += Stopwatch.GetElapsedTime(verifyStarted);
                _ran[r] = true;
                continue;
            }
            if (row.TokenCount == 1)
            {
                if (_firstDecodeSlot < 0)
                    _firstDecodeSlot = slot;
                _lastDecodeSlot = slot;
                continue;
            }
            // A chunk on top of a past runs alone, and so does the first chunk of a long prompt;
            // whole fresh prompts in adjacent slots run together (a right-padded batch costs its
            // longest row's length for every row, so a long chunk is not padded onto short ones).
            var group = 1;
            if (IsWholeFreshPrompt(row))
            {
                while (slot + group < _rowBySlot.Length && _rowBySlot[slot + group] is var next && next >= 0
                    && IsWholeFreshPrompt(rows[next]))
                    group++;
            }
            var written = 0;
            for (var g = 0; g < group; g++)
            {
                var member = rows[_rowBySlot[slot + g]];
                _steps[g] = new SequenceStep(member.PastLength, member.TokenCount);
                _stepAdapters[g] = member.Sequence.AdapterId;
                plan.Tokens.Slice(member.TokenOffset, member.TokenCount).CopyTo(_stepTokens.AsSpan(written));
                written += member.TokenCount;
            }
            var started = Stopwatch.GetTimestamp();
            ReadOnlySpan<float> logits;
            try
            {
                logits = _model.Step(slot, _steps.AsSpan(0, group), _stepTokens.AsSpan(0, written), Adapters(group));
            }
            catch (StepInterruptedException)
            {
                // Only a plan's one prefill run is ever interruptible: nothing of the plan ran.
                _ran.AsSpan(0, rows.Length).Clear();
                cursor = -1;
                return new StepResult(_vocab, _copied, default, _lastRowOf.AsSpan(0, rows.Length), default, _kept, _keptStride, _ran.AsSpan(0, rows.Length))
                {
                    Interrupted = true,
                };
            }
            prefill += Stopwatch.GetElapsedTime(started);
            prefillTokens += written;
            for (var g = 0; g < group; g++)
            {
                var member = _rowBySlot[slot + g];
                if (rows[member].LogitsCount > 0)
                    logits.Slice(g * _vocab, _vocab).CopyTo(_copied.AsSpan(member * _vocab, _vocab));
                _ran[member] = true;
            }
            slot += group - 1;
            if (!wholePlan)
            {
                cursor = slot + 1;
                return new StepResult(_vocab, _copied, default, _lastRowOf.AsSpan(0, rows.Length), new StepTimes(prefillTokens, prefill, decode),
                    _kept, _keptStride, _ran.AsSpan(0, rows.Length));
            }
        }
        cursor = -1;
        int firstDecodeSlot = _firstDecodeSlot, lastDecodeSlot = _lastDecodeSlot;

        var last = ReadOnlySpan<float>.Empty;
        if (lastDecodeSlot >= 0)
        {
            // One run over the slots from the first decoding one to the last (a run takes adjacent
            // slots). Slots in the range that do not decode get a scratch row that writes past
            // their valid KV, with the adapter of a decoding row: a batch whose rows share one
            // adapter stays one adapter for the runner (its matrices gathered once), and a scratch
            // row's output is unread.
            var scratchAdapter = rows[_rowBySlot[lastDecodeSlot]].Sequence.AdapterId;
            var batch = lastDecodeSlot - firstDecodeSlot + 1;
            for (var slot = firstDecodeSlot; slot <= lastDecodeSlot; slot++)
            {
                var r = _rowBySlot[slot];
                var i = slot - firstDecodeSlot;
                if (r >= 0 && rows[r].TokenCount == 1)
                {
                    _steps[i] = new SequenceStep(rows[r].PastLength, 1);
                    _stepTokens[i] = plan.Tokens[rows[r].TokenOffset];
                    _stepAdapters[i] = rows[r].Sequence.AdapterId;
                    _lastRowOf[r] = i;
                    _ran[r] = true;
                }
                else if (r >= 0 && rows[r].LogitsCount > 1)
                {
                    // Past the drafts: the slot's recorded length stops before them, and accepted ones must survive.
                    _steps[i] = new SequenceStep(rows[r].PastLength + rows[r].TokenCount, 1);
                    _stepTokens[i] = 0;
                    _stepAdapters[i] = scratchAdapter;
                }
                else
                {
                    _steps[i] = new SequenceStep(_kv.ScratchPosition(slot), 1);
                    _stepTokens[i] = 0;
                    _stepAdapters[i] = scratchAdapter;
                }
            }
            var started = Stopwatch.GetTimestamp();
            last = _model.Step(firstDecodeSlot, _steps.AsSpan(0, batch), _stepTokens.AsSpan(0, batch), Adapters(batch));
            decode += Stopwatch.GetElapsedTime(started);
        }
        return new StepResult(_vocab, _copied, last, _lastRowOf.AsSpan(0, rows.Length), new StepTimes(prefillTokens, prefill, decode),
            _kept, _keptStride, _ran.AsSpan(0, rows.Length));
    }

    // A model without adapters gets the plain step (an empty span).
    private ReadOnlySpan<int> Adapters(int rows) => AdapterCount == 0 ? default : _stepAdapters.AsSpan(0, rows);

    private static bool IsWholeFreshPrompt(PlanRow row) => row.PastLength == 0 && row.TokenCount > 1 && row.LogitsCount > 0;
}
