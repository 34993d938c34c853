using InferenceServer.Model;

namespace InferenceServer.Engine.Tests;

/// <summary>
/// The paged step contract on the CPU, for the engine's tests (PagedAttention has a CUDA kernel
/// only). The pool keeps each position's token id where the real one keeps keys and values; a
/// row's logits come from the real dense model run over the sequence read back through the row's
/// block table plus its new tokens, so a wrong table, a block shared that should not be, or a
/// position read before it was written changes the tokens or fails the step. Reductions are
/// computed as the paged graph does: arg-max, top-k (best first), logsumexp.
/// </summary>
internal sealed class ReferencePagedModel : IPagedModel, IDisposable
{
    private const int Unwritten = -1;

    private readonly DecoderRunner _runner;
    private readonly int[] _pool;
    private readonly long[] _next;
    private readonly float[] _topLogits, _logSumExp, _logits;
    private readonly long[] _topIds;
    private readonly List<(SequenceStep[] Rows, bool WithLogits)> _steps = [];

    public ReferencePagedModel(ModelFolder folder, int kvBlocks, int blockTokens = 16, int capacity = 256, int maxSequences = 16, int maxStepTokens = 512, int topK = 8)
    {
        _runner = new DecoderRunner(folder, new RunnerOptions { MaxBatch = 1, MaxSequenceLength = capacity, IntraOpThreads = 1 });
        VocabSize = _runner.VocabSize;
        Capacity = capacity;
        BlockTokens = blockTokens;
        KvBlocks = kvBlocks;
        MaxBlocksPerSequence = (capacity + blockTokens - 1) / blockTokens;
        MaxSequences = maxSequences;
        MaxStepTokens = maxStepTokens;
        TopK = topK;
        _pool = new int[kvBlocks * blockTokens];
        Array.Fill(_pool, Unwritten);
        _next = new long[maxSequences];
        _topLogits = new float[maxSequences * topK];
        _topIds = new long[maxSequences * topK];
        _logSumExp = new float[maxSequences];
        _logits = new float[maxSequences * VocabSize];
    }

    public int VocabSize { get; }
    public int Capacity { get; }
    public int BlockTokens { get; }
    public int KvBlocks { get; }
    public int MaxBlocksPerSequence { get; }
    public int MaxSequences { get; }
    public int MaxStepTokens { get; }
    public int TopK { get; }

    /// <summary>Every step run so far: its rows, and whether it returned logits rows.</summary>
    public IReadOnlyList<(SequenceStep[] Rows, bool WithLogits)> Steps
    {
        get
        {
            lock (_steps)
                return [.. _steps];
        }
    }

    public PagedStepResult Step(scoped ReadOnlySpan<SequenceStep> rows, scoped ReadOnlySpan<int> tokens, scoped ReadOnlySpan<int> blockTable, int tableWidth, bool withLogits = false)
    {
        if (rows.Length == 0 || rows.Length > MaxSequences || tokens.Length > MaxStepTokens || blockTable.Length != rows.Length * tableWidth)
            throw new ArgumentException($"a step of {rows.Length} rows, {tokens.Length} tokens and a {blockTable.Length}-entry table of width {tableWidth} is outside the contract");
        lock (_steps)
            _steps.Add((rows.ToArray(), withLogits));

        var offset = 0;
        for (var r = 0; r < rows.Length; r++)
        {
            var (past, count) = rows[r];
            var table = blockTable.Slice(r * tableWidth, tableWidth);
            if ((past + count + BlockTokens - 1) / BlockTokens > tableWidth || past + count > Capacity)
                throw new ArgumentException($"row {r}: {past} + {count} tokens do not fit its {tableWidth} blocks");
            var sequence = new int[past + count];
            for (var p = 0; p < past; p++)
            {
                var token = _pool[Position(table, p)];
                if (token == Unwritten)
                    throw new InvalidOperationException($"row {r} reads position {p} (block {table[p / BlockTokens]}), which no step wrote");
                sequence[p] = token;
            }
            for (var i = 0; i < count; i++)
            {
                sequence[past + i] = tokens[offset + i];
                _pool[Position(table, past + i)] = tokens[offset + i];
            }
            offset += count;

            var logits = _runner.Step(0, [new SequenceStep(0, sequence.Length)], sequence);
            Reduce(r, logits, withLogits);
        }
        if (offset != tokens.Length)
            throw new ArgumentException($"the rows carry {offset} tokens; {tokens.Length} were given");
        return new PagedStepResult(_next.AsSpan(0, rows.Length), _topLogits.AsSpan(0, rows.Length * TopK), _topIds.AsSpan(0, rows.Length * TopK),
            _logSumExp.AsSpan(0, rows.Length), withLogits ? _logits.AsSpan(0, rows.Length * VocabSize) : default, TopK);
    }

    private int Position(ReadOnlySpan<int> table, int position)
    {
        var block = table[position / BlockTokens];
        if ((uint)block >= (uint)KvBlocks)
            throw new ArgumentException($"block {block} is outside the pool of {KvBlocks}");
        return block * BlockTokens + position % BlockTokens;
    }

    private void Reduce(int row, ReadOnlySpan<float> logits, bool withLogits)
    {
        var values = logits.ToArray();
        var order = Enumerable.Range(0, VocabSize).OrderByDescending(i => values[i]).ThenBy(i => i).Take(TopK).ToArray();
        var max = logits[order[0]];
        double sum = 0;
        foreach (var value in logits)
            sum += Math.Exp(value - max);
        _next[row] = order[0];
        _logSumExp[row] = max + (float)Math.Log(sum);
        for (var k = 0; k < TopK; k++)
        {
            _topIds[row * TopK + k] = order[k];
            _topLogits[row * TopK + k] = logits[order[k]];
        }
        if (withLogits)
            logits.CopyTo(_logits.AsSpan(row * VocabSize, VocabSize));
    }

    public void Dispose() => _runner.Dispose();
}
