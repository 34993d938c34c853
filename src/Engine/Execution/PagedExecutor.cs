using System.Diagnostics;
using InferenceServer.Engine.Kv;
using InferenceServer.Model;

namespace InferenceServer.Engine;

/// <summary>
/// The paged graph: one run per iteration, whatever the mix of decodes and prefill chunks, every
/// row's past named by its block table. Sampling mostly uses what the graph reduced on the device
/// (arg-max, top-k, logsumexp); the whole logits rows come back only in steps where the plan says
/// some row needs them.
/// </summary>
internal sealed class PagedExecutor : IStepExecutor
{
    private readonly IPagedModel _model;
    private readonly PagedBlockLayout _layout;
    private readonly SequenceStep[] _rows;
    private readonly int[] _table;
    private readonly int[] _rowIndex;

    public PagedExecutor(IPagedModel model, PagedBlockLayout layout)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(layout);
        _model = model;
        _layout = layout;
        _rows = new SequenceStep[model.MaxSequences];
        _table = new int[model.MaxSequences * model.MaxBlocksPerSequence];
        _rowIndex = new int[model.MaxSequences];
        for (var r = 0; r < _rowIndex.Length; r++)
            _rowIndex[r] = r;
    }

    public int VocabSize => _model.VocabSize;
    public int MaxStepTokens => _model.MaxStepTokens;
    public bool DecodesRunApart => false;
    public int ReducedTopK => _model.TopK;

    public StepResult Execute(IterationPlan plan)
    {
        var rows = plan.Rows;
        if (rows.Length == 0)
            return default;
        var width = 1;
        for (var r = 0; r < rows.Length; r++)
        {
            _rows[r] = new SequenceStep(rows[r].PastLength, rows[r].TokenCount);
            width = Math.Max(width, _layout.Table(rows[r].Sequence.KvIndex).BlockCount);
        }
        for (var r = 0; r < rows.Length; r++)
        {
            var blocks = _layout.Table(rows[r].Sequence.KvIndex).Blocks;
            var row = _table.AsSpan(r * width, width);
            blocks.CopyTo(row);
            row[blocks.Length..].Clear(); // read by nobody: lengths bound what attention reads
        }
        var started = Stopwatch.GetTimestamp();
        var result = _model.Step(_rows.AsSpan(0, rows.Length), plan.Tokens, _table.AsSpan(0, rows.Length * width), width, plan.NeedsLogitsRows);
        var elapsed = Stopwatch.GetElapsedTime(started);
        // One run for both: a step with prompt tokens counts as prefill (the decodes in it make the
        // per-token cost a little higher, which errs toward shorter chunks).
        var times = plan.PrefillTokens > 0 ? new StepTimes(plan.PrefillTokens, elapsed, TimeSpan.Zero) : new StepTimes(0, TimeSpan.Zero, elapsed);
        return new StepResult(_model.VocabSize, result.Logits, result.Logits.IsEmpty ? default : _rowIndex.AsSpan(0, rows.Length),
            result.NextTokens, result.TopLogits, result.TopIds, result.LogSumExp, result.TopK, times);
    }
}
