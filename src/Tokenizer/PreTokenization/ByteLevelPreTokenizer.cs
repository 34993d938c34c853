namespace InferenceServer.Tokenizer.PreTokenization;

/// <summary>
/// GPT-2's byte-level step: optionally a space before each piece and GPT-2's split pattern; the
/// model then works on the UTF-8 bytes of each piece (mapped through <see cref="Model.ByteLevelAlphabet"/>).
/// </summary>
public sealed class ByteLevelPreTokenizer(bool addPrefixSpace, bool useRegex) : PreTokenizer
{
    private readonly SplitPreTokenizer? _split = useRegex
        ? new SplitPreTokenizer(PatternMatcher.ForRegex(KnownPatterns.Gpt2), SplitBehavior.Isolated, invert: false)
        : null;

    public override bool IsByteLevel => true;

    public override void Split(List<Piece> pieces, List<Piece> scratch)
    {
        if (addPrefixSpace)
        {
            for (var i = 0; i < pieces.Count; i++)
            {
                var piece = pieces[i];
                if (piece.Length > 0 && piece.Span[0] != ' ')
                {
                    var text = " " + piece.Span.ToString();
                    pieces[i] = new Piece(text, 0, text.Length) { AtTextStart = piece.AtTextStart };
                }
            }
        }
        _split?.Split(pieces, scratch);
    }

    protected override void SplitPiece(Piece piece, List<Piece> output) => throw new InvalidOperationException();
}

/// <summary>When SentencePiece-style tokenizers put the word marker in front of a piece.</summary>
public enum PrependScheme
{
    Always,
    First,
    Never,
}

/// <summary>
/// SentencePiece's whitespace handling: spaces become the marker (▁ by default), a marker is put
/// in front per the scheme, and pieces are cut before each marker.
/// </summary>
public sealed class MetaspacePreTokenizer(char replacement, PrependScheme prependScheme, bool split) : PreTokenizer
{
    private readonly SplitPreTokenizer _splitter = new(PatternMatcher.ForLiteral(replacement.ToString()), SplitBehavior.MergedWithNext, invert: false);

    public override void Split(List<Piece> pieces, List<Piece> scratch)
    {
        for (var i = 0; i < pieces.Count; i++)
        {
            var piece = pieces[i];
            var text = piece.Span.ToString().Replace(' ', replacement);
            var prepend = prependScheme == PrependScheme.Always || (prependScheme == PrependScheme.First && piece.AtTextStart);
            if (prepend && text.Length > 0 && text[0] != replacement)
                text = replacement + text;
            pieces[i] = new Piece(text, 0, text.Length) { AtTextStart = piece.AtTextStart };
        }
        if (split)
            _splitter.Split(pieces, scratch);
    }

    protected override void SplitPiece(Piece piece, List<Piece> output) => throw new InvalidOperationException();
}
