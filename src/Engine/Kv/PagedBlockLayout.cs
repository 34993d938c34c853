namespace InferenceServer.Engine.Kv;

/// <summary>
/// The paged graph's KV: every sequence's KV in blocks of one shared pool, listed in its block
/// table (<see cref="PagedKvCache"/>: full blocks are hashed and shared between sequences with the
/// same prefix, and kept after their sequences end).
/// </summary>
internal sealed class PagedBlockLayout(int kvBlocks, int blockTokens, int capacity, int maxSequences, int maxBlocksPerSequence) : KvLayout
{
    private readonly PagedKvCache _kv = new(kvBlocks, blockTokens);

    public override int Capacity => capacity;
    public override int MaxSequences => maxSequences;
    public override int TotalBlocks => _kv.TotalBlocks;
    public override int BlockTokens => _kv.BlockTokens;
    public override int UsedBlocks => _kv.UsedBlocks;
    public override int CachedBlocks => _kv.CachedBlocks;

    public override bool TryAdmit(Sequence sequence, IterationPlan plan)
    {
        var blocks = sequence.Blocks ??= new PagedSequence(maxBlocksPerSequence);
        var reused = _kv.AttachPrefix(blocks, sequence.Tokens.AsSpan(0, sequence.Length));
        if (!_kv.EnsureCapacity(blocks, sequence.Length + 1))
        {
            _kv.Release(blocks);
            return false;
        }
        sequence.Computed = reused;
        return true;
    }

    // From the pool: empty blocks first, then the least recently used cached ones.
    public override bool TryGrow(Sequence sequence, int tokens) => _kv.EnsureCapacity(sequence.Blocks!, tokens);

    // Full blocks are registered for sharing now; the scheduler admits nobody else before the
    // step that computes them has run, so no prompt can attach a block still being written.
    public override void Computed(Sequence sequence, int start) =>
        _kv.Computed(sequence.Blocks!, sequence.Tokens.AsSpan(0, sequence.Computed));

    public override void Release(Sequence sequence)
    {
        if (sequence.Blocks is { BlockCount: > 0 } blocks)
            _kv.Release(blocks);
    }
}
