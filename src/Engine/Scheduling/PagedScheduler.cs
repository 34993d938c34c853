using InferenceServer.Engine.Kv;
using InferenceServer.Model;

namespace InferenceServer.Engine;

/// <summary>
/// The paged path: every sequence's KV lives in blocks of one shared pool, listed in its block
/// table (<see cref="PagedKvCache"/>: full blocks are hashed and shared between sequences with
/// the same prefix, and kept after their sequences end). An iteration is one model run: every
/// decoding sequence's next position first, then prefill chunks of any number of sequences up to
/// the token budget. Sampling mostly uses what the graph reduced on the device (arg-max, top-k,
/// logsumexp: greedy and top-k sampling need nothing more); the whole logits rows come back only
/// in steps where some sequence needs them (penalties, token healing, sampling over the whole vocabulary).
/// </summary>
internal sealed class PagedScheduler : KvScheduler
{
    private readonly InferenceEngine _engine;
    private readonly IPagedModel _model;
    private readonly EngineOptions _options;
    private readonly PagedKvCache _kv;
    private readonly int _tokenBudget;
    private readonly StepCost _cost;

    // Per-iteration scratch, sized once for the largest step.
    private readonly SequenceStep[] _rows;
    private readonly Sequence?[] _rowSequences;
    private readonly int[] _tokens;
    private readonly int[] _table;

    public PagedScheduler(InferenceEngine engine, IPagedModel model, EngineOptions options)
    {
        ArgumentNullException.ThrowIfNull(model);
        _engine = engine;
        _model = model;
        _options = options;
        _kv = new PagedKvCache(model.KvBlocks, model.BlockTokens);
        _tokenBudget = Math.Min(options.MaxBatchTokens, model.MaxStepTokens);
        _cost = new StepCost(options.IterationTimeBudget);
        if (_tokenBudget < 1)
            throw new ArgumentException("a step must carry at least one token", nameof(options));
        _rows = new SequenceStep[model.MaxSequences];
        _rowSequences = new Sequence?[model.MaxSequences];
        _tokens = new int[_tokenBudget];
        _table = new int[model.MaxSequences * model.MaxBlocksPerSequence];
    }

    public override int VocabSize => _model.VocabSize;
    public override int Capacity => _model.Capacity;
    public override int TotalBlocks => _kv.TotalBlocks;
    public override int BlockTokens => _kv.BlockTokens;
    public override int UsedBlocks => _kv.UsedBlocks;
    public override int CachedBlocks => _kv.CachedBlocks;

    public override bool TryAdmit(Sequence sequence)
    {
        if (_engine.Running.Count >= _model.MaxSequences)
            return false;
        var blocks = sequence.Blocks ??= new PagedSequence(_model.MaxBlocksPerSequence);
        var reused = _kv.AttachPrefix(blocks, sequence.Tokens.AsSpan(0, sequence.Length));
        if (!_kv.EnsureCapacity(blocks, sequence.Length + 1))
        {
            _kv.Release(blocks);
            return false;
        }
        sequence.Computed = reused;
        return true;
    }

    // A decoding sequence writes one more position; crossing into a new block needs one from
    // the pool (empty, else the least recently used cached one), else the newest running
    // sequence is preempted (possibly this one).
    public override void ReserveDecodeBlocks()
    {
        var running = _engine.Running;
        for (var i = 0; i < running.Count; i++)
        {
            var sequence = running[i];
            if (!sequence.IsDecoding)
                continue;
            var preempted = false;
            while (!_kv.EnsureCapacity(sequence.Blocks!, sequence.Computed + 1))
            {
                var victim = _engine.Newest();
                _engine.Preempt(victim);
                preempted = true;
                if (victim == sequence)
                    break;
            }
            if (preempted)
                i = running.IndexOf(sequence) is var at && at >= 0 ? at : i - 1; // the list shrank
        }
    }

    public override void Run()
    {
        var running = _engine.Running;
        int rows = 0, tokens = 0, width = 1;
        var withLogits = false;

        // Decodes first: a token each, never held back by a long prompt.
        foreach (var sequence in running)
        {
            if (rows == _rows.Length || tokens == _tokenBudget)
                break;
            if (!sequence.IsDecoding || sequence.Output.IsFinished)
                continue;
            _tokens[tokens++] = sequence.Tokens[sequence.Length - 1];
            AddRow(ref rows, ref width, ref withLogits, sequence, 1);
        }
        // Then prefill chunks, as many sequences as the token and time budgets allow.
        var decodeTokens = tokens;
        var prefillLeft = _cost.PrefillTokens(decodes: decodeTokens > 0);
        foreach (var sequence in running)
        {
            if (rows == _rows.Length || tokens == _tokenBudget || prefillLeft == 0)
                break;
            if (sequence.IsDecoding || sequence.Output.Abandoned)
                continue;
            var chunk = Math.Min(Math.Min(Math.Min(sequence.Length - sequence.Computed, _options.PrefillChunkTokens), _tokenBudget - tokens), prefillLeft);
            prefillLeft -= chunk;
            sequence.Tokens.AsSpan(sequence.Computed, chunk).CopyTo(_tokens.AsSpan(tokens));
            tokens += chunk;
            AddRow(ref rows, ref width, ref withLogits, sequence, chunk);
        }
        if (rows == 0)
            return;

        for (var r = 0; r < rows; r++)
        {
            var blocks = _rowSequences[r]!.Blocks!.Blocks;
            var row = _table.AsSpan(r * width, width);
            blocks.CopyTo(row);
            row[blocks.Length..].Clear(); // read by nobody: lengths bound what attention reads
        }
        var started = System.Diagnostics.Stopwatch.GetTimestamp();
        var result = _model.Step(_rows.AsSpan(0, rows), _tokens.AsSpan(0, tokens), _table.AsSpan(0, rows * width), width, withLogits);
        var elapsed = System.Diagnostics.Stopwatch.GetElapsedTime(started);
        // One run for both: a step with prompt tokens counts as prefill (the decodes in it make the
        // per-token cost a little higher, which errs toward shorter chunks).
        if (tokens > decodeTokens)
            _cost.Prefill(tokens - decodeTokens, elapsed);
        else
            _cost.Decode(elapsed);

        int vocab = _model.VocabSize, topK = result.TopK;
        for (var r = 0; r < rows; r++)
        {
            var sequence = _rowSequences[r]!;
            _rowSequences[r] = null;
            var chunk = _rows[r].TokenCount;
            var prefill = !sequence.IsDecoding;
            sequence.Computed += chunk;
            _kv.Computed(sequence.Blocks!, sequence.Tokens.AsSpan(0, sequence.Computed));
            if (prefill)
                _engine.Metrics.PromptComputed(chunk);
            if (sequence.Computed != sequence.Length)
                continue; // a prefill chunk short of the prompt's end samples nothing
            if (withLogits && InferenceEngine.NeedsLogits(sequence, topK))
                _engine.Accept(sequence, result.Logits.Slice(r * vocab, vocab));
            else
                _engine.AcceptReduced(sequence, (int)result.NextTokens[r], result.TopLogits.Slice(r * topK, topK), result.TopIds.Slice(r * topK, topK), result.LogSumExp[r]);
        }
    }

    private void AddRow(ref int rows, ref int width, ref bool withLogits, Sequence sequence, int chunk)
    {
        _rows[rows] = new SequenceStep(sequence.Computed, chunk);
        _rowSequences[rows] = sequence;
        rows++;
        width = Math.Max(width, sequence.Blocks!.BlockCount);
        if (sequence.Computed + chunk == sequence.Length && InferenceEngine.NeedsLogits(sequence, _model.TopK))
            withLogits = true;
    }

    public override void Release(Sequence sequence)
    {
        if (sequence.Blocks is { BlockCount: > 0 } blocks)
            _kv.Release(blocks);
    }
}
