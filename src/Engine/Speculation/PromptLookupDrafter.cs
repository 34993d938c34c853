using System.Buffers;
using System.Numerics;

namespace InferenceServer.Engine.Speculation;

/// <summary>
/// Drafts the next tokens of one sequence by prompt lookup: the sequence's last n tokens (n from
/// <see cref="MaxNgram"/> down to <see cref="MinNgram"/>) are looked up among its earlier tokens
/// (prompt and output), and the tokens that followed their most recent earlier occurrence are
/// proposed. Code completion repeats the file's own text, so these drafts are often right, and a
/// model checks all of them in one step.
///
/// Every n-gram that has a token after it is kept in an open-addressing table (by its tokens and
/// its length) with the position of that token, the most recent occurrence winning, so a lookup
/// costs a few hash probes however long the sequence is. The table is updated as the history
/// grows: each call indexes what was appended since the last one. Entries hold positions only and
/// are compared against the history itself, so a hash collision never proposes a wrong
/// continuation. Tables come from <see cref="ArrayPool{T}"/> and grow by doubling; once the
/// history stops growing past its largest size, drafting allocates nothing. Not thread-safe.
/// </summary>
public sealed class PromptLookupDrafter : IDisposable
{
    /// <summary>The longest n-gram an entry can hold (it is packed into the entry's low bits).</summary>
    public const int NgramLimit = 15;

    private const int NgramBits = 4;
    private const int MinimumTableLength = 256;

    /// <summary>The most tokens a history may hold: positions share an int with the n-gram length.</summary>
    public const int MaxHistory = int.MaxValue >> NgramBits;

    private int[] _table; // 0: empty; else (position of the token after the n-gram << NgramBits) | n
    private int _entries;
    private int _indexed = 1; // the n-grams ending before this position are in the table
    private bool _disposed;

    /// <param name="maxNgram">The longest suffix looked up (tried first).</param>
    /// <param name="minNgram">The shortest suffix looked up; 1 proposes after any single repeated token.</param>
    /// <param name="expectedLength">How many tokens the history will likely hold (the prompt plus the output), to size the table once.</param>
    public PromptLookupDrafter(int maxNgram = 3, int minNgram = 1, int expectedLength = 0)
    {
        if (minNgram < 1 || maxNgram < minNgram || maxNgram > NgramLimit)
            throw new ArgumentOutOfRangeException(nameof(maxNgram), $"n-gram lengths must satisfy 1 <= min ({minNgram}) <= max ({maxNgram}) <= {NgramLimit}");
        ArgumentOutOfRangeException.ThrowIfNegative(expectedLength);
        MaxNgram = maxNgram;
        MinNgram = minNgram;
        _table = RentTable(TableLengthFor(expectedLength));
    }

    public int MaxNgram { get; }
    public int MinNgram { get; }

    /// <summary>How many tokens of the history the table covers.</summary>
    public int IndexedLength => _indexed;

    /// <summary>Forgets every token, for the next sequence; the table is kept.</summary>
    public void Reset()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        Array.Clear(_table);
        _entries = 0;
        _indexed = 1;
    }

    /// <summary>
    /// Writes up to <paramref name="draft"/>.Length tokens that followed the most recent earlier
    /// occurrence of the longest matching suffix of <paramref name="history"/>; returns how many
    /// (0 when no suffix of <see cref="MinNgram"/> tokens or more occurred before). The history is
    /// the sequence's tokens so far and only ever grows between calls (the same tokens, more of
    /// them); a draft that reaches the end of the history carries on from its own start, as a
    /// repeating pattern does.
    /// </summary>
    public int Propose(ReadOnlySpan<int> history, Span<int> draft) => Propose(history, draft, out _);

    /// <summary>
    /// <see cref="Propose(ReadOnlySpan{int}, Span{int})"/>, also saying how long the suffix that
    /// matched was (0 when nothing was proposed): longer matches are right more often, so a
    /// caller may draft more after them.
    /// </summary>
    public int Propose(ReadOnlySpan<int> history, Span<int> draft, out int matchedLength)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        matchedLength = 0;
        if (history.Length < _indexed && history.Length > 0)
            throw new ArgumentException($"the history shrank from at least {_indexed} to {history.Length} tokens; call Reset for a new sequence", nameof(history));
        Index(history);
        if (draft.IsEmpty)
            return 0;
        for (var n = Math.Min(MaxNgram, history.Length - 1); n >= MinNgram; n--)
        {
            var next = Find(history, history[^n..]);
            if (next < 0)
                continue;
            var count = 0;
            for (var source = next; count < draft.Length; source++, count++)
                draft[count] = source < history.Length ? history[source] : draft[source - history.Length];
            matchedLength = n;
            return count;
        }
        return 0;
    }

    /// <summary>Adds the n-grams that end before each position not indexed yet, with that position.</summary>
    private void Index(ReadOnlySpan<int> history)
    {
        if (history.Length > MaxHistory)
            throw new ArgumentException($"a history of {history.Length} tokens is more than the {MaxHistory} the table's entries can address", nameof(history));
        for (; _indexed < history.Length; _indexed++)
        {
            for (var n = MinNgram; n <= MaxNgram && n <= _indexed; n++)
            {
                if ((_entries + 1) * 2 > _table.Length)
                    Grow(history);
                Insert(history, _indexed, n);
            }
        }
    }

    // The position of the token after the most recent indexed occurrence of the n-gram, or -1.
    private int Find(ReadOnlySpan<int> history, ReadOnlySpan<int> ngram)
    {
        var mask = _table.Length - 1;
        for (var slot = (int)(Hash(ngram) & (uint)mask); ; slot = (slot + 1) & mask)
        {
            var entry = _table[slot];
            if (entry == 0)
                return -1;
            var next = entry >> NgramBits;
            if ((entry & ((1 << NgramBits) - 1)) == ngram.Length && history.Slice(next - ngram.Length, ngram.Length).SequenceEqual(ngram))
                return next;
        }
    }

    private void Insert(ReadOnlySpan<int> history, int next, int n)
    {
        var ngram = history.Slice(next - n, n);
        var mask = _table.Length - 1;
        for (var slot = (int)(Hash(ngram) & (uint)mask); ; slot = (slot + 1) & mask)
        {
            var entry = _table[slot];
            if (entry == 0)
            {
                _entries++;
            }
            else
            {
                var previous = entry >> NgramBits;
                if ((entry & ((1 << NgramBits) - 1)) != n || !history.Slice(previous - n, n).SequenceEqual(ngram))
                    continue;
            }
            // A new n-gram, or a later occurrence of one: the most recent wins.
            _table[slot] = (next << NgramBits) | n;
            return;
        }
    }

    private void Grow(ReadOnlySpan<int> history)
    {
        var old = _table;
        _table = RentTable(old.Length * 2);
        var mask = _table.Length - 1;
        foreach (var entry in old)
        {
            if (entry == 0)
                continue;
            var n = entry & ((1 << NgramBits) - 1);
            var next = entry >> NgramBits;
            var slot = (int)(Hash(history.Slice(next - n, n)) & (uint)mask);
            while (_table[slot] != 0)
                slot = (slot + 1) & mask;
            _table[slot] = entry;
        }
        ArrayPool<int>.Shared.Return(old);
    }

    // Multiply-rotate over the tokens and the length, so that "a" and "a a" land apart.
    private static uint Hash(ReadOnlySpan<int> ngram)
    {
        var hash = 0x9E3779B9u * (uint)(ngram.Length + 1);
        foreach (var token in ngram)
            hash = BitOperations.RotateLeft((hash ^ (uint)token) * 0x85EBCA6Bu, 13);
        return hash ^ (hash >> 16);
    }

    private int TableLengthFor(int tokens) =>
        (int)BitOperations.RoundUpToPowerOf2((uint)Math.Max(MinimumTableLength, 2 * tokens * (MaxNgram - MinNgram + 1)));

    // The pool hands out powers of two, as the probing needs, and arrays that come back dirty.
    private static int[] RentTable(int length)
    {
        var table = ArrayPool<int>.Shared.Rent(length);
        if (!BitOperations.IsPow2(table.Length))
            throw new InvalidOperationException($"the array pool gave {table.Length} entries, not a power of two");
        Array.Clear(table);
        return table;
    }

    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        ArrayPool<int>.Shared.Return(_table);
        _table = [];
    }
}
