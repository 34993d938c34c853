using System.Buffers;
using System.Collections.Concurrent;
using System.Text;

namespace InferenceServer.Tokenizer.Model;

/// <summary>
/// Byte-pair encoding with a merge table: a word starts as one symbol per byte (byte-level
/// vocabularies) or per character, and the adjacent pair with the lowest merge rank is merged
/// (leftmost first among equal ranks) until no pair can be. A min-heap over (rank, position)
/// with a linked list of symbols keeps each merge logarithmic, never a rescan of the word.
/// Results per distinct word are cached.
/// </summary>
public sealed class BpeModel
{
    private const int CacheCapacity = 250_000;
    private const int CacheableLength = 256;

    private readonly Dictionary<string, int> _vocab;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _vocabBySpan;
    private readonly string[] _idToToken;
    private readonly Dictionary<long, Merge> _merges;
    private readonly int[] _byteToId = new int[256];
    private readonly int[] _byteFallbackIds = new int[256];
    private readonly ConcurrentDictionary<string, int[]> _cache = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, int[]>.AlternateLookup<ReadOnlySpan<char>> _cacheBySpan;
    private readonly int? _unkId;

    public bool ByteLevel { get; }
    public bool ByteFallback { get; }
    public bool FuseUnknown { get; }
    public bool IgnoreMerges { get; }

    private readonly record struct Merge(int Rank, int Id);

    public BpeModel(Dictionary<string, int> vocab, IReadOnlyList<(string Left, string Right)> merges, BpeOptions options)
    {
        _vocab = vocab;
        _vocabBySpan = vocab.GetAlternateLookup<ReadOnlySpan<char>>();
        _cacheBySpan = _cache.GetAlternateLookup<ReadOnlySpan<char>>();
        ByteLevel = options.ByteLevel;
        ByteFallback = options.ByteFallback;
        FuseUnknown = options.FuseUnknown;
        IgnoreMerges = options.IgnoreMerges;

        var size = vocab.Count == 0 ? 0 : vocab.Values.Max() + 1;
        _idToToken = new string[size];
        foreach (var (token, id) in vocab)
            _idToToken[id] = token;

        if (options.UnknownToken is { } unk)
        {
            if (!vocab.TryGetValue(unk, out var unkId))
                throw new TokenizerLoadException($"the unknown token '{unk}' is not in the vocabulary");
            _unkId = unkId;
        }

        _merges = new Dictionary<long, Merge>(merges.Count);
        for (var rank = 0; rank < merges.Count; rank++)
        {
            var (left, right) = merges[rank];
            if (!vocab.TryGetValue(left, out var a) || !vocab.TryGetValue(right, out var b))
                throw new TokenizerLoadException($"merge {rank} ('{left} {right}') uses a token that is not in the vocabulary");
            if (!vocab.TryGetValue(left + right, out var merged))
                throw new TokenizerLoadException($"merge {rank} ('{left} {right}') makes '{left + right}', which is not in the vocabulary");
            // The first occurrence of a pair wins, as in the reference.
            _merges.TryAdd(Key(a, b), new Merge(rank, merged));
        }

        for (var b = 0; b < 256; b++)
        {
            _byteToId[b] = vocab.TryGetValue(ByteLevelAlphabet.ByteToChar((byte)b).ToString(), out var id) ? id : -1;
            _byteFallbackIds[b] = vocab.TryGetValue($"<0x{b:X2}>", out var fallback) ? fallback : -1;
        }
    }

    public int VocabSize => _idToToken.Length;

    public bool TryGetId(ReadOnlySpan<char> token, out int id) => _vocabBySpan.TryGetValue(token, out id);

    public string? IdToToken(int id) => (uint)id < (uint)_idToToken.Length ? _idToToken[id] : null;

    private static long Key(int left, int right) => ((long)left << 32) | (uint)right;

    /// <summary>Appends the ids of one pre-tokenized word.</summary>
    public void Encode(ReadOnlySpan<char> word, List<int> output)
    {
        if (word.IsEmpty)
            return;
        var cacheable = word.Length <= CacheableLength;
        if (cacheable && _cacheBySpan.TryGetValue(word, out var cached))
        {
            output.AddRange(cached);
            return;
        }
        var before = output.Count;
        EncodeUncached(word, output);
        if (cacheable && _cache.Count < CacheCapacity)
            _cache.TryAdd(word.ToString(), output.GetRange(before, output.Count - before).ToArray());
    }

    private void EncodeUncached(ReadOnlySpan<char> word, List<int> output)
    {
        if (ByteLevel)
        {
            var byteCount = Encoding.UTF8.GetMaxByteCount(word.Length);
            var bytes = ArrayPool<byte>.Shared.Rent(byteCount);
            try
            {
                var length = Encoding.UTF8.GetBytes(word, bytes);
                EncodeBytes(bytes.AsSpan(0, length), output);
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(bytes);
            }
            return;
        }

        if (IgnoreMerges && _vocabBySpan.TryGetValue(word, out var whole))
        {
            output.Add(whole);
            return;
        }
        var symbols = ArrayPool<int>.Shared.Rent(word.Length * 4);
        try
        {
            var count = 0;
            Span<byte> utf8 = stackalloc byte[4];
            for (var i = 0; i < word.Length;)
            {
                var width = char.IsHighSurrogate(word[i]) && i + 1 < word.Length && char.IsLowSurrogate(word[i + 1]) ? 2 : 1;
                if (_vocabBySpan.TryGetValue(word.Slice(i, width), out var id))
                {
                    symbols[count++] = id;
                }
                else if (ByteFallback && TryByteFallback(word.Slice(i, width), utf8, symbols, ref count))
                {
                    // one symbol per UTF-8 byte, added by TryByteFallback
                }
                else if (_unkId is { } unk)
                {
                    if (!(FuseUnknown && count > 0 && symbols[count - 1] == unk))
                        symbols[count++] = unk;
                }
                // else: no way to spell the character; the reference drops it too.
                i += width;
            }
            MergeAndAppend(symbols, count, output);
        }
        finally
        {
            ArrayPool<int>.Shared.Return(symbols);
        }
    }

    private bool TryByteFallback(ReadOnlySpan<char> character, Span<byte> utf8, int[] symbols, ref int count)
    {
        var length = Encoding.UTF8.GetBytes(character, utf8);
        for (var k = 0; k < length; k++)
        {
            if (_byteFallbackIds[utf8[k]] < 0)
                return false;
        }
        for (var k = 0; k < length; k++)
            symbols[count++] = _byteFallbackIds[utf8[k]];
        return true;
    }

    private void EncodeBytes(ReadOnlySpan<byte> bytes, List<int> output)
    {
        if (IgnoreMerges)
        {
            // The whole word as one token when the vocabulary has it, spelled in the byte alphabet.
            Span<char> mapped = bytes.Length <= 256 ? stackalloc char[bytes.Length] : new char[bytes.Length];
            for (var i = 0; i < bytes.Length; i++)
                mapped[i] = ByteLevelAlphabet.ByteToChar(bytes[i]);
            if (_vocabBySpan.TryGetValue(mapped, out var whole))
            {
                output.Add(whole);
                return;
            }
        }
        var symbols = ArrayPool<int>.Shared.Rent(bytes.Length);
        try
        {
            var count = 0;
            foreach (var b in bytes)
            {
                var id = _byteToId[b];
                if (id >= 0)
                    symbols[count++] = id;
                else if (_unkId is { } unk)
                    symbols[count++] = unk;
            }
            MergeAndAppend(symbols, count, output);
        }
        finally
        {
            ArrayPool<int>.Shared.Return(symbols);
        }
    }

    private void MergeAndAppend(int[] symbols, int count, List<int> output)
    {
        if (count <= 1)
        {
            if (count == 1)
                output.Add(symbols[0]);
            return;
        }
        var pool = ArrayPool<int>.Shared;
        var next = pool.Rent(count);
        var prev = pool.Rent(count);
        var heap = ArrayPool<long>.Shared.Rent(count * 2 + 4);
        try
        {
            var heapCount = 0;
            for (var i = 0; i < count; i++)
            {
                next[i] = i + 1 < count ? i + 1 : -1;
                prev[i] = i - 1;
            }
            for (var i = 0; i + 1 < count; i++)
                PushPair(i, next[i]);

            while (heapCount > 0)
            {
                var top = Pop();
                var rank = (int)(top >> 32);
                var position = (int)(top & 0xFFFFFFFF);
                var right = next[position];
                if (symbols[position] < 0 || right < 0)
                    continue;
                // Stale entry: this position's pair changed since it was pushed.
                if (!_merges.TryGetValue(Key(symbols[position], symbols[right]), out var merge) || merge.Rank != rank)
                    continue;

                symbols[position] = merge.Id;
                symbols[right] = -1;
                next[position] = next[right];
                if (next[right] >= 0)
                    prev[next[right]] = position;
                if (prev[position] >= 0)
                    PushPair(prev[position], position);
                if (next[position] >= 0)
                    PushPair(position, next[position]);
            }

            for (var i = 0; i >= 0; i = next[i])
                output.Add(symbols[i]);

            void PushPair(int left, int rightIndex)
            {
                if (!_merges.TryGetValue(Key(symbols[left], symbols[rightIndex]), out var m))
                    return;
                if (heapCount == heap.Length)
                {
                    var bigger = ArrayPool<long>.Shared.Rent(heap.Length * 2);
                    heap.AsSpan(0, heapCount).CopyTo(bigger);
                    ArrayPool<long>.Shared.Return(heap);
                    heap = bigger;
                }
                // Ordered by rank, then by position: the leftmost of equal ranks merges first.
                var item = ((long)m.Rank << 32) | (uint)left;
                var index = heapCount++;
                while (index > 0)
                {
                    var parent = (index - 1) >> 1;
                    if (heap[parent] <= item)
                        break;
                    heap[index] = heap[parent];
                    index = parent;
                }
                heap[index] = item;
            }

            long Pop()
            {
                var result = heap[0];
                var last = heap[--heapCount];
                var index = 0;
                while (true)
                {
                    var child = 2 * index + 1;
                    if (child >= heapCount)
                        break;
                    if (child + 1 < heapCount && heap[child + 1] < heap[child])
                        child++;
                    if (heap[child] >= last)
                        break;
                    heap[index] = heap[child];
                    index = child;
                }
                if (heapCount > 0)
                    heap[index] = last;
                return result;
            }
        }
        finally
        {
            pool.Return(next);
            pool.Return(prev);
            ArrayPool<long>.Shared.Return(heap);
        }
    }
}

public sealed record BpeOptions
{
    public bool ByteLevel { get; init; }
    public bool ByteFallback { get; init; }
    public bool FuseUnknown { get; init; }
    public bool IgnoreMerges { get; init; }
    public string? UnknownToken { get; init; }
}
