namespace InferenceServer.Engine.Kv;

/// <summary>
/// One sequence's view of the paged pool: the blocks that hold its KV, in order (its row of the
/// graph's block_table), and how many of the leading ones are full and registered for sharing.
/// </summary>
public sealed class PagedSequence
{
    private readonly int[] _blocks;

    public PagedSequence(int maxBlocks) => _blocks = new int[maxBlocks];

    /// <summary>Block ids, position order; entries past <see cref="BlockCount"/> are unused.</summary>
    public ReadOnlySpan<int> Blocks => _blocks.AsSpan(0, BlockCount);

    public int BlockCount { get; private set; }

    /// <summary>Leading blocks that are full and findable by later prompts.</summary>
    public int RegisteredBlocks { get; internal set; }

    /// <summary>Chained hash of the registered blocks (of the last one and everything before it).</summary>
    internal ulong ChainHash { get; set; }

    internal int MaxBlocks => _blocks.Length;

    internal void Push(int block) => _blocks[BlockCount++] = block;

    internal void Clear()
    {
        BlockCount = 0;
        RegisteredBlocks = 0;
        ChainHash = 0;
    }
}

/// <summary>
/// KV accounting for the paged path: a pool of fixed-size blocks (the device pool's first axis),
/// a block table per sequence, and prefix caching. A full block is registered under a hash of
/// its tokens chained with the hash of the blocks before it, so a block is found only by a prompt
/// that agrees with everything up to its end. A hit is confirmed against the block's stored
/// tokens and its parent's hash, so what a prompt is trusted on without comparing is only the
/// 64-bit chained hash of the blocks before it. Registered blocks are
/// reference-counted; when the last sequence using one leaves, it stays findable in a
/// least-recently-used list until its space is needed. Only full blocks are shared and nobody
/// writes into a full block, so copy-on-write never arises: a sequence's writes go to its last,
/// partly filled block, which is its own.
///
/// Single-threaded (the engine loop) and allocation-free after construction.
/// </summary>
public sealed class PagedKvCache
{
    private const int None = -1;

    private readonly int[] _refCount;
    private readonly ulong[] _hash;          // registered blocks: their chained hash
    private readonly bool[] _registered;
    private readonly ulong[] _parentHash;    // registered blocks: the chained hash of the blocks before it (0 for the first)
    private readonly int[] _tokens;          // registered blocks: their token ids, BlockTokens per block
    private readonly Dictionary<ulong, int> _byHash;
    private readonly int[] _free;            // stack of blocks holding nothing
    private int _freeCount;
    private readonly int[] _lruPrev, _lruNext; // unreferenced registered blocks, oldest at the head
    private int _lruHead = None, _lruTail = None;

    public PagedKvCache(int totalBlocks, int blockTokens)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(totalBlocks);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(blockTokens);
        TotalBlocks = totalBlocks;
        BlockTokens = blockTokens;
        _refCount = new int[totalBlocks];
        _hash = new ulong[totalBlocks];
        _registered = new bool[totalBlocks];
        _parentHash = new ulong[totalBlocks];
        _tokens = new int[checked(totalBlocks * blockTokens)];
        _byHash = new Dictionary<ulong, int>(totalBlocks);
        _free = new int[totalBlocks];
        for (var b = 0; b < totalBlocks; b++)
            _free[b] = totalBlocks - 1 - b; // block 0 comes off the stack first
        _freeCount = totalBlocks;
        _lruPrev = new int[totalBlocks];
        _lruNext = new int[totalBlocks];
    }

    public int TotalBlocks { get; }
    public int BlockTokens { get; }

    /// <summary>Blocks some sequence holds.</summary>
    public int UsedBlocks => TotalBlocks - _freeCount - CachedBlocks;

    /// <summary>Registered blocks nobody holds: findable by a later prompt, reclaimed when space runs out.</summary>
    public int CachedBlocks { get; private set; }

    /// <summary>Blocks a sequence can get now: empty ones plus cached ones (evicted on demand).</summary>
    public int AvailableBlocks => _freeCount + CachedBlocks;

    public int BlocksFor(int tokens) => (tokens + BlockTokens - 1) / BlockTokens;

    /// <summary>References to a block: the sequences whose table holds it.</summary>
    public int ReferenceCount(int block) => _refCount[block];

    /// <summary>
    /// Gives an empty sequence the cached blocks that hold the longest prefix of
    /// <paramref name="prompt"/>, whole blocks only and never the prompt's last token (its logits
    /// are needed, so it is computed). Returns the tokens whose KV is already there. The chain of
    /// hashes starts from <see cref="AdapterSeed"/>(<paramref name="adapter"/>), so blocks computed
    /// with one adapter are never found by a prompt of another (or of the base model).
    /// </summary>
    public int AttachPrefix(PagedSequence sequence, ReadOnlySpan<int> prompt, int adapter = 0)
    {
        ArgumentNullException.ThrowIfNull(sequence);
        if (sequence.BlockCount != 0)
            throw new InvalidOperationException("the sequence already holds blocks");
        sequence.ChainHash = AdapterSeed(adapter);
        var limit = Math.Min((prompt.Length - 1) / BlockTokens, sequence.MaxBlocks);
        for (var i = 0; i < limit; i++)
        {
            var tokens = prompt.Slice(i * BlockTokens, BlockTokens);
            var parent = sequence.ChainHash;
            var chain = ChainHash(parent, tokens);
            if (!_byHash.TryGetValue(chain, out var block) || _parentHash[block] != parent || !tokens.SequenceEqual(BlockTokensOf(block)))
                break;
            Reference(block);
            sequence.Push(block);
            sequence.RegisteredBlocks++;
            sequence.ChainHash = chain;
        }
        return sequence.BlockCount * BlockTokens;
    }

    /// <summary>
    /// Makes the sequence's table cover <paramref name="tokens"/> positions, taking empty blocks
    /// first and then the least recently used cached ones. All or nothing: false, and no change,
    /// when there are not enough.
    /// </summary>
    public bool EnsureCapacity(PagedSequence sequence, int tokens)
    {
        ArgumentNullException.ThrowIfNull(sequence);
        var needed = BlocksFor(tokens) - sequence.BlockCount;
        if (needed <= 0)
            return true;
        if (sequence.BlockCount + needed > sequence.MaxBlocks || needed > AvailableBlocks)
            return false;
        for (var i = 0; i < needed; i++)
        {
            var block = _freeCount > 0 ? _free[--_freeCount] : Reclaim();
            _refCount[block] = 1;
            sequence.Push(block);
        }
        return true;
    }

    /// <summary>
    /// The sequence's KV is now computed for <paramref name="tokens"/> (all its tokens so far):
    /// registers the blocks that became full so later prompts can share them.
    /// </summary>
    public void Computed(PagedSequence sequence, ReadOnlySpan<int> tokens)
    {
        ArgumentNullException.ThrowIfNull(sequence);
        var full = Math.Min(tokens.Length / BlockTokens, sequence.BlockCount);
        for (var i = sequence.RegisteredBlocks; i < full; i++)
        {
            var block = sequence.Blocks[i];
            var blockTokens = tokens.Slice(i * BlockTokens, BlockTokens);
            var parent = sequence.ChainHash;
            var chain = ChainHash(parent, blockTokens);
            sequence.ChainHash = chain;
            sequence.RegisteredBlocks = i + 1;
            // The same content may already be registered (two prompts computed it side by side):
            // the first copy stays the one found; this one is freed with its sequence.
            if (_byHash.ContainsKey(chain))
                continue;
            _byHash.Add(chain, block);
            _registered[block] = true;
            _hash[block] = chain;
            _parentHash[block] = parent;
            blockTokens.CopyTo(_tokens.AsSpan(block * BlockTokens, BlockTokens));
        }
    }

    /// <summary>The sequence leaves: registered blocks stay cached, the others become empty.</summary>
    public void Release(PagedSequence sequence)
    {
        ArgumentNullException.ThrowIfNull(sequence);
        // Last block first, so the least recently used end of the cache holds a prefix's tail
        // blocks before its head: evicting a tail keeps the shorter prefix findable.
        for (var i = sequence.BlockCount - 1; i >= 0; i--)
        {
            var block = sequence.Blocks[i];
            if (--_refCount[block] > 0)
                continue;
            if (_registered[block])
            {
                LruAppend(block);
                CachedBlocks++;
            }
            else
            {
                _free[_freeCount++] = block;
            }
        }
        sequence.Clear();
    }

    /// <summary>Forgets every cached block (their KV is no longer trusted, or memory is wanted back).</summary>
    public void DropCache()
    {
        while (_lruHead != None)
            _free[_freeCount++] = Reclaim();
    }

    private ReadOnlySpan<int> BlockTokensOf(int block) => _tokens.AsSpan(block * BlockTokens, BlockTokens);

    private void Reference(int block)
    {
        if (_refCount[block]++ == 0)
        {
            LruRemove(block);
            CachedBlocks--;
        }
    }

    // Takes the least recently used cached block out of the cache, unregistered.
    private int Reclaim()
    {
        var block = _lruHead;
        if (block == None)
            throw new InvalidOperationException("no cached block to reclaim");
        LruRemove(block);
        CachedBlocks--;
        _byHash.Remove(_hash[block]);
        _registered[block] = false;
        return block;
    }

    private void LruAppend(int block)
    {
        _lruPrev[block] = _lruTail;
        _lruNext[block] = None;
        if (_lruTail == None)
            _lruHead = block;
        else
            _lruNext[_lruTail] = block;
        _lruTail = block;
    }

    private void LruRemove(int block)
    {
        var prev = _lruPrev[block];
        var next = _lruNext[block];
        if (prev == None)
            _lruHead = next;
        else
            _lruNext[prev] = next;
        if (next == None)
            _lruTail = prev;
        else
            _lruPrev[next] = prev;
    }

    /// <summary>Where a sequence's chain of block hashes starts: 0 for the base model, a mix of the id for an adapter.</summary>
    internal static ulong AdapterSeed(int adapter) => adapter == 0 ? 0 : Mix((ulong)(uint)adapter * 0x9E3779B97F4A7C15UL);

    // 64-bit mix of the previous block's hash and this block's tokens (splitmix64 finalizer per word).
    private static ulong ChainHash(ulong previous, ReadOnlySpan<int> tokens)
    {
        var h = previous ^ 0x9E3779B97F4A7C15UL;
        foreach (var token in tokens)
            h = Mix(h + (uint)token + 0x9E3779B97F4A7C15UL);
        return h;
    }

    private static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
