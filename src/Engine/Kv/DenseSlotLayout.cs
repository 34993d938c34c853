namespace InferenceServer.Engine.Kv;

/// <summary>
/// The dense graph's KV: a slot per running sequence (<see cref="KvSlots"/> counts their blocks
/// against the budget and keeps finished slots' KV for prefix reuse). A prompt takes over the
/// cached slot holding its longest prefix, or gets that prefix copied into a free slot.
/// </summary>
internal sealed class DenseSlotLayout : KvLayout
{
    private readonly KvSlots _kv;
    private readonly Sequence?[] _bySlot;

    /// <param name="kvBytesPerToken">What a token's KV takes over all layers, to count <paramref name="kvCacheBytes"/> in blocks (0: all the slots).</param>
    public DenseSlotLayout(int slots, int capacity, int blockTokens, long kvCacheBytes, long kvBytesPerToken)
    {
        var physicalBlocks = slots * ((capacity + blockTokens - 1) / blockTokens);
        var budgetBlocks = kvCacheBytes > 0
            ? (int)Math.Min(physicalBlocks, kvCacheBytes / (kvBytesPerToken * blockTokens))
            : physicalBlocks;
        if (budgetBlocks < 1)
            throw new ArgumentException($"the KV budget of {kvCacheBytes} bytes holds less than one block of {blockTokens} tokens", nameof(kvCacheBytes));
        _kv = new KvSlots(slots, capacity, blockTokens, budgetBlocks);
        _bySlot = new Sequence?[slots];
    }

    public override int Capacity => _kv.Capacity;
    public override int MaxSequences => _kv.SlotCount;
    public override int TotalBlocks => _kv.TotalBlocks;
    public override int BlockTokens => _kv.BlockTokens;
    public override int UsedBlocks => _kv.UsedBlocks;
    public override int CachedBlocks => _kv.CachedBlocks;

    /// <summary>The slots' bookkeeping, for the executor's scratch rows.</summary>
    public KvSlots Slots => _kv;

    public override bool TryAdmit(Sequence sequence, IterationPlan plan)
    {
        var tokens = sequence.Tokens.AsSpan(0, sequence.Length);
        var (source, common) = _kv.LongestPrefix(tokens, sequence.AdapterId);
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
            // The executor copies the KV before this iteration's runs; the bookkeeping moves now.
            plan.Copies.Add(new KvCopy(source, slot, reuse));
            _kv.CopyTokens(source, slot, reuse);
        }
        _kv.Take(slot, reuse, sequence.Length + 1, sequence.AdapterId);
        sequence.KvIndex = slot;
        sequence.Computed = reuse;
        _bySlot[slot] = sequence;
        return true;
    }

    // Crossing into a new block needs a free one: evict cached KV, else there is none.
    public override bool TryGrow(Sequence sequence, int tokens)
    {
        var slot = sequence.KvIndex;
        if (_kv.BlocksFor(tokens) <= _kv.OwnedBlocks(slot))
            return true;
        if (_kv.FreeBlocks < 1 && !_kv.EvictOne(keep: -1))
            return false;
        _kv.Reserve(slot, tokens);
        return true;
    }

    public override void Computed(Sequence sequence, int start) =>
        _kv.Computed(sequence.KvIndex, start, sequence.Tokens.AsSpan(start, sequence.Computed - start));

    public override void Release(Sequence sequence)
    {
        if (sequence.KvIndex < 0)
            return;
        _kv.Release(sequence.KvIndex);
        _bySlot[sequence.KvIndex] = null;
        sequence.KvIndex = -1;
    }
}
