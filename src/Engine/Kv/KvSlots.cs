namespace InferenceServer.Engine.Kv;

/// <summary>
/// KV accounting for the dense path: the model's slots, what each holds, and a budget counted
/// in blocks of tokens. A slot is empty, owned by a running sequence, or cached: the KV of a
/// finished (or preempted) sequence kept for reuse, whose blocks are evictable.
///
/// Prefix reuse: a new prompt takes the slot with the longest common prefix if that slot is
/// cached, or gets that prefix copied from it into a free slot. The prefix search compares tokens
/// slot by slot; a paged KV pool replaces it with a hash per full block (of the block's tokens
/// and everything before it), which this interface already speaks in: blocks in, blocks out.
/// </summary>
internal sealed class KvSlots
{
    private readonly int[][] _tokens;      // per slot: the token ids whose KV it holds
    private readonly int[] _lengths;       // per slot: how many
    private readonly long[] _lastUsed;     // per slot: for least-recently-used eviction of cached slots
    private readonly bool[] _owned;        // per slot: a running sequence owns it
    private readonly int[] _reserved;      // per owned slot: tokens its blocks are held for (at least its length)
    private readonly int[] _adapter;       // per slot: the adapter its KV was computed with (0: none)
    private long _clock;

    public KvSlots(int slots, int capacity, int blockTokens, int totalBlocks)
    {
        Capacity = capacity;
        BlockTokens = blockTokens;
        TotalBlocks = totalBlocks;
        _tokens = new int[slots][];
        for (var i = 0; i < slots; i++)
            _tokens[i] = new int[capacity];
        _lengths = new int[slots];
        _lastUsed = new long[slots];
        _owned = new bool[slots];
        _reserved = new int[slots];
        _adapter = new int[slots];
    }

    public int Capacity { get; }
    public int BlockTokens { get; }
    public int TotalBlocks { get; }
    public int SlotCount => _lengths.Length;

    public int BlocksFor(int tokens) => (tokens + BlockTokens - 1) / BlockTokens;

    public int Length(int slot) => _lengths[slot];
    public bool IsOwned(int slot) => _owned[slot];
    public bool IsCached(int slot) => !_owned[slot] && _lengths[slot] > 0;

    public int UsedBlocks
    {
        get
        {
            var used = 0;
            for (var s = 0; s < _lengths.Length; s++)
            {
                if (_owned[s])
                    used += OwnedBlocks(s);
            }
            return used;
        }
    }

    public int CachedBlocks
    {
        get
        {
            var cached = 0;
            for (var s = 0; s < _lengths.Length; s++)
            {
                if (!_owned[s])
                    cached += BlocksFor(_lengths[s]);
            }
            return cached;
        }
    }

    public int FreeBlocks => TotalBlocks - UsedBlocks - CachedBlocks;

    /// <summary>Running slots hold this many blocks; a sequence about to grow past a block boundary needs one more.</summary>
    public int OwnedBlocks(int slot) => BlocksFor(Math.Max(_lengths[slot], _reserved[slot]));

    /// <summary>Holds blocks for <paramref name="tokens"/> tokens in an owned slot (the caller checked they are free).</summary>
    public void Reserve(int slot, int tokens) => _reserved[slot] = Math.Max(_reserved[slot], tokens);

    /// <summary>
    /// The slot whose KV shares the longest prefix with <paramref name="prompt"/> (owned or cached),
    /// and that length. Only slots computed with the same <paramref name="adapter"/> count: KV an
    /// adapter computed differs from the base model's and from another adapter's.
    /// </summary>
    public (int Slot, int Length) LongestPrefix(ReadOnlySpan<int> prompt, int adapter)
    {
        var best = (-1, 0);
        for (var s = 0; s < _lengths.Length; s++)
        {
            if (_adapter[s] != adapter)
                continue;
            var common = _tokens[s].AsSpan(0, _lengths[s]).CommonPrefixLength(prompt);
            // On a tie a cached slot wins: it can be taken over instead of copied.
            var better = common > best.Item2 || (common == best.Item2 && common > 0 && !_owned[s] && _owned[best.Item1]);
            if (better)
                best = (s, common);
        }
        return best;
    }

    /// <summary>An unowned slot to take: the lowest empty one, else the least recently used cached one (not <paramref name="keep"/>).</summary>
    public int FindFreeSlot(int keep)
    {
        for (var s = 0; s < _lengths.Length; s++)
        {
            if (!_owned[s] && _lengths[s] == 0)
                return s;
        }
        var lru = -1;
        for (var s = 0; s < _lengths.Length; s++)
        {
            if (!_owned[s] && s != keep && (lru < 0 || _lastUsed[s] < _lastUsed[lru]))
                lru = s;
        }
        return lru;
    }

    /// <summary>Drops the least recently used cached slot (not <paramref name="keep"/>); false when there is none.</summary>
    public bool EvictOne(int keep)
    {
        var lru = -1;
        for (var s = 0; s < _lengths.Length; s++)
        {
            if (IsCached(s) && s != keep && (lru < 0 || _lastUsed[s] < _lastUsed[lru]))
                lru = s;
        }
        if (lru < 0)
            return false;
        _lengths[lru] = 0;
        return true;
    }

    /// <summary>
    /// A sequence of <paramref name="adapter"/> takes a slot: its KV is valid for the first
    /// <paramref name="keepLength"/> tokens already there, and blocks are held for <paramref name="reserveTokens"/>.
    /// </summary>
    public void Take(int slot, int keepLength, int reserveTokens, int adapter)
    {
        _adapter[slot] = adapter;
        _owned[slot] = true;
        _lengths[slot] = keepLength;
        _reserved[slot] = reserveTokens;
        _lastUsed[slot] = ++_clock;
    }

    /// <summary>Copies the first <paramref name="length"/> tokens' bookkeeping from one slot to another (the KV is copied by the model).</summary>
    public void CopyTokens(int fromSlot, int toSlot, int length) => _tokens[fromSlot].AsSpan(0, length).CopyTo(_tokens[toSlot]);

    /// <summary>Records that the slot now holds KV for <paramref name="tokens"/> from position <paramref name="start"/>.</summary>
    public void Computed(int slot, int start, ReadOnlySpan<int> tokens)
    {
        tokens.CopyTo(_tokens[slot].AsSpan(start));
        _lengths[slot] = start + tokens.Length;
    }

    /// <summary>The owner left: the KV stays, cached for the next prompt that shares it.</summary>
    public void Release(int slot)
    {
        _owned[slot] = false;
        _reserved[slot] = 0;
        _lastUsed[slot] = ++_clock;
    }

    /// <summary>
    /// A decode step writes one position of every slot in its row range; for slots that are not
    /// decoding that is scratch. Keeps such a position inside the slot and outside valid KV.
    /// </summary>
    public int ScratchPosition(int slot)
    {
        if (_lengths[slot] < Capacity)
            return _lengths[slot];
        _lengths[slot] = Capacity - 1; // the last position gets overwritten: forget it
        return Capacity - 1;
    }
}
