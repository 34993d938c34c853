using InferenceServer.Tokenizer.Decoding;

namespace InferenceServer.Tokenizer;

/// <summary>
/// Token healing. A prompt that stops part-way through what is normally one token (a line's
/// indentation before its first word, half an identifier) ends in a token the model seldom saw
/// there in training, and it answers badly: a byte-level BPE merges the last space of an
/// indentation into the next word, so "\n        " on its own mostly precedes a blank line.
/// Healing takes the prompt's last token back and lets the model spell its bytes again: while
/// some of them are left, the next token must either start with all of what is left or be a
/// beginning of it. Those bytes are already in the user's text, so they are not output again.
/// Byte-level tokenizers only: there a token's bytes do not depend on its neighbours.
/// </summary>
public sealed class TokenHealing
{
    private readonly TokenTextTable _table;
    private readonly int[] _sorted; // ids of the tokens that can be generated as text, ordered by their bytes
    private readonly bool[] _isText;

    private TokenHealing(Tokenizer tokenizer)
    {
        _table = tokenizer.TokenText;
        _isText = new bool[tokenizer.VocabSize];
        for (var id = 0; id < tokenizer.VocabSize; id++)
            _isText[id] = _table.Bytes(id, firstToken: false).Length > 0;
        // Added tokens, special or not (Qwen's FIM markers are not), are matched whole before BPE
        // runs: never part of a spelling, and a prompt ending in one is not healed.
        foreach (var added in tokenizer.AddedTokens)
        {
            if ((uint)added.Id < (uint)_isText.Length)
                _isText[added.Id] = false;
        }
        var ids = new List<int>(tokenizer.VocabSize);
        for (var id = 0; id < tokenizer.VocabSize; id++)
        {
            if (_isText[id])
                ids.Add(id);
        }
        _sorted = [.. ids];
        Array.Sort(_sorted, (a, b) => Bytes(a).SequenceCompareTo(Bytes(b)) is var c and not 0 ? c : a.CompareTo(b));
    }

    /// <summary>Healing for a tokenizer, or null when its tokens' text depends on their neighbours (not byte-level).</summary>
    internal static TokenHealing? Build(Tokenizer tokenizer) =>
        tokenizer.TokenText is { ByteLevel: true, JoinWithSpace: false, LeadingStrip: 0 } ? new TokenHealing(tokenizer) : null;

    /// <summary>The bytes a token adds to the text.</summary>
    public ReadOnlySpan<byte> Bytes(int id) => _table.Bytes(id, firstToken: false);

    /// <summary>
    /// The bytes of the prompt's last token when it can be healed: a text token (not an added
    /// token), not the only token of the prompt. Null otherwise (a prompt ending in a FIM marker).
    /// </summary>
    public byte[]? HealableEnd(ReadOnlySpan<int> prompt)
    {
        if (prompt.Length < 2 || !IsText(prompt[^1]))
            return null;
        return Bytes(prompt[^1]).ToArray();
    }

    /// <summary>The tokens whose bytes start with all of <paramref name="remaining"/> (it included), in byte order.</summary>
    public ReadOnlySpan<int> Extending(ReadOnlySpan<byte> remaining)
    {
        var start = LowerBound(remaining, inclusive: true);
        var end = LowerBound(remaining, inclusive: false);
        return _sorted.AsSpan(start, end - start);
    }

    /// <summary>
    /// Writes the tokens that spell a proper beginning of <paramref name="remaining"/> exactly
    /// (shortest first) and returns how many; <paramref name="destination"/> needs
    /// remaining.Length - 1 entries at most.
    /// </summary>
    public int BeginningsOf(ReadOnlySpan<byte> remaining, Span<int> destination)
    {
        var written = 0;
        for (var length = 1; length < remaining.Length; length++)
        {
            var beginning = remaining[..length];
            var at = LowerBound(beginning, inclusive: true);
            // Several ids may share the bytes (a byte token and a merged one): all are allowed.
            for (; at < _sorted.Length && Bytes(_sorted[at]).SequenceEqual(beginning); at++)
            {
                if (written == destination.Length)
                    return written;
                destination[written++] = _sorted[at];
            }
        }
        return written;
    }

    /// <summary>
    /// How many bytes of <paramref name="remaining"/> are left after <paramref name="token"/>:
    /// none once a token covered all of it, fewer when it spelled a beginning. A token that does
    /// neither (a stop id) ends the healing too.
    /// </summary>
    public int Remaining(ReadOnlySpan<byte> remaining, int token)
    {
        var bytes = Bytes(token);
        return bytes.Length < remaining.Length && remaining.StartsWith(bytes) && bytes.Length > 0 ? remaining.Length - bytes.Length : 0;
    }

    private bool IsText(int id) => (uint)id < (uint)_isText.Length && _isText[id];

    // The first sorted index whose bytes, cut to the key's length, are >= the key (inclusive) or > it.
    private int LowerBound(ReadOnlySpan<byte> key, bool inclusive)
    {
        int low = 0, high = _sorted.Length;
        while (low < high)
        {
            var mid = (low + high) >>> 1;
            var bytes = Bytes(_sorted[mid]);
            var c = bytes[..Math.Min(bytes.Length, key.Length)].SequenceCompareTo(key);
            if (c < 0 || (!inclusive && c == 0))
                low = mid + 1;
            else
                high = mid;
        }
        return low;
    }
}
