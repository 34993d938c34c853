using InferenceServer.Tokenizer.Normalization;

namespace InferenceServer.Tokenizer;

/// <summary>A token from tokenizer.json "added_tokens": matched in the text before BPE sees it.</summary>
public sealed record AddedToken(int Id, string Content, bool Special, bool LStrip = false, bool RStrip = false, bool Normalized = false, bool SingleWord = false);

/// <summary>
/// Finds added tokens in text, leftmost-longest and without overlaps, the way the reference does:
/// tokens marked "normalized: false" are matched in the raw text, the others in the normalized
/// text of what remains. lstrip/rstrip widen a match over neighbouring whitespace; single_word
/// only matches when no letter or digit touches the token.
/// </summary>
internal sealed class AddedVocabulary
{
    private readonly Trie _raw;
    private readonly Trie _normalized;

    public IReadOnlyList<AddedToken> Tokens { get; }

    public AddedVocabulary(IReadOnlyList<AddedToken> tokens, Normalizer? normalizer)
    {
        Tokens = tokens;
        _raw = new Trie(tokens.Where(t => !t.Normalized || normalizer is null).Select(t => (t.Content, t)));
        _normalized = new Trie(tokens.Where(t => t.Normalized && normalizer is not null).Select(t => (normalizer!.Normalize(t.Content), t)));
    }

    public bool HasNormalizedTokens => _normalized.Count > 0;

    /// <summary>Cuts <paramref name="text"/>[start..end] into added tokens and the text between them.</summary>
    public void Split(string text, int start, int end, bool normalizedPass, List<Segment> output, bool atTextStart)
    {
        var trie = normalizedPass ? _normalized : _raw;
        var gapStart = start;
        var position = start;
        while (position < end)
        {
            if (!trie.TryMatch(text.AsSpan(position, end - position), out var token, out var length)
                || (token.SingleWord && !IsWholeWord(text, start, end, position, position + length)))
            {
                position++;
                continue;
            }
            var matchStart = position;
            var matchEnd = position + length;
            if (token.LStrip)
            {
                while (matchStart > gapStart && char.IsWhiteSpace(text[matchStart - 1]))
                    matchStart--;
            }
            if (token.RStrip)
            {
                while (matchEnd < end && char.IsWhiteSpace(text[matchEnd]))
                    matchEnd++;
            }
            if (matchStart > gapStart)
                output.Add(Segment.OfText(text, gapStart, matchStart - gapStart, atTextStart && gapStart == start));
            output.Add(Segment.OfToken(token.Id));
            gapStart = position = matchEnd;
        }
        if (end > gapStart)
            output.Add(Segment.OfText(text, gapStart, end - gapStart, atTextStart && gapStart == start));
    }

    private static bool IsWholeWord(string text, int start, int end, int matchStart, int matchEnd) =>
        (matchStart == start || !char.IsLetterOrDigit(text[matchStart - 1]))
        && (matchEnd == end || !char.IsLetterOrDigit(text[matchEnd]));

    /// <summary>A prefix tree over token contents; a table of first characters rejects most positions at once.</summary>
    private sealed class Trie
    {
        private readonly Node _root = new();
        private readonly bool[] _firstChars = new bool[char.MaxValue + 1];

        public int Count { get; }

        public Trie(IEnumerable<(string Content, AddedToken Token)> entries)
        {
            foreach (var (content, token) in entries)
            {
                if (content.Length == 0)
                    continue;
                var node = _root;
                foreach (var c in content)
                {
                    node.Children ??= [];
                    if (!node.Children.TryGetValue(c, out var child))
                        node.Children[c] = child = new Node();
                    node = child;
                }
                node.Token ??= token;
                _firstChars[content[0]] = true;
                Count++;
            }
        }

        public bool TryMatch(ReadOnlySpan<char> text, out AddedToken token, out int length)
        {
            token = null!;
            length = 0;
            if (!_firstChars[text[0]])
                return false;
            var node = _root;
            for (var i = 0; i < text.Length && node.Children is not null && node.Children.TryGetValue(text[i], out node); i++)
            {
                if (node.Token is { } candidate)
                {
                    token = candidate;
                    length = i + 1;
                }
            }
            return length > 0;
        }

        private sealed class Node
        {
            public Dictionary<char, Node>? Children;
            public AddedToken? Token;
        }
    }
}

/// <summary>Either an added token's id or a range of text still to be tokenized.</summary>
internal readonly record struct Segment(int TokenId, string? Text, int Start, int Length, bool AtTextStart)
{
    public bool IsToken => Text is null;

    public static Segment OfToken(int id) => new(id, null, 0, 0, false);

    public static Segment OfText(string text, int start, int length, bool atTextStart) => new(-1, text, start, length, atTextStart);
}
