namespace InferenceServer.Engine.Kv;

/// <summary>
/// The paged graph's KV: every sequence's KV in blocks of one shared pool, listed in its block
/// table (<see cref="PagedKvCache"/>: full blocks are hashed and shared between sequences with the
/// same prefix, and kept after their sequences end). The tables are made once, one per sequence
/// that can run; a running sequence's <see cref="Sequence.KvIndex"/> says which is its own.
/// </summary>
internal sealed class PagedBlockLayout : KvLayout
{
    private readonly PagedKvCache _kv;
    private readonly PagedSequence[] _tables;
    private readonly int[] _freeTables;
    private int _freeCount;

    public PagedBlockLayout(int kvBlocks, int blockTokens, int capacity, int maxSequences, int maxBlocksPerSequence)
    {
        _kv = new PagedKvCache(kvBlocks, blockTokens);
        Capacity = capacity;
        _tables = new PagedSequence[maxSequences];
        _freeTables = new int[maxSequences];
        for (var i = 0; i < maxSequences; i++)
        {
            _tables[i] = new PagedSequence(maxBlocksPerSequence);
            _freeTables[i] = maxSequences - 1 - i; // table 0 is taken first
        }
        _freeCount = maxSequences;
    }

    public override int Capacity { get; }
    public override int MaxSequences => _tables.Length;
    public override int TotalBlocks => _kv.TotalBlocks;
    public override int BlockTokens => _kv.BlockTokens;
    public override int UsedBlocks => _kv.UsedBlocks;
    public override int CachedBlocks => _kv.CachedBlocks;

    /// <summary>A running sequence's block table (its <see cref="Sequence.KvIndex"/>), for the executor.</summary>
    public PagedSequence Table(int index) => _tables[index];

    public override bool TryAdmit(Sequence sequence, IterationPlan plan)
    {
        if (_freeCount == 0)
            return false;
        var index = _freeTables[_freeCount - 1];
        var blocks = _tables[index];
        var reused = _kv.AttachPrefix(blocks, sequence.Tokens.AsSpan(0, sequence.Length), sequence.AdapterId);
        if (!_kv.EnsureCapacity(blocks, sequence.Length + 1))
        {
            _kv.Release(blocks);
            return false;
        }
        _freeCount--;
        sequence.KvIndex = index;
        sequence.Computed = reused;
        return true;
    }

    // From the pool: empty blocks first, then the least recently used cached ones.
    public override bool TryGrow(Sequence sequence, int tokens) => _kv.EnsureCapacity(_tables[sequence.KvIndex], tokens);

    // Full blocks are registered for sharing now; the scheduler admits nobody else before the
    // step that computes them has run, so no prompt can attach a block still being written.
    public override void Computed(Sequence sequence, int start) =>
        _kv.Computed(_tables[sequence.KvIndex], sequence.Tokens.AsSpan(0, sequence.Computed));

    public override void Release(Sequence sequence)
    {
        var index = sequence.KvIndex;
        if (index < 0)
            return;
        _kv.Release(_tables[index]);
        _freeTables[_freeCount++] = index;
        sequence.KvIndex = -1;
    }
}
