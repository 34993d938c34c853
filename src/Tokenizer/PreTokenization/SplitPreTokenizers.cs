using static InferenceServer.Tokenizer.PreTokenization.CodePoints;

namespace InferenceServer.Tokenizer.PreTokenization;

/// <summary>What a split does with the text its pattern matches (tokenizer.json "behavior").</summary>
public enum SplitBehavior
{
    Removed,
    Isolated,
    MergedWithPrevious,
    MergedWithNext,
    Contiguous,
}

/// <summary>
/// Cuts each piece at the matches of a pattern. Every piece is first cut into alternating
/// gap/match segments, then the behaviour decides which segments stand alone and which join a
/// neighbour; empty pieces are dropped.
/// </summary>
public class SplitPreTokenizer(PatternMatcher matcher, SplitBehavior behavior, bool invert) : PreTokenizer
{
    protected override void SplitPiece(Piece piece, List<Piece> output)
    {
        var text = piece.Span;
        var pendingStart = 0;     // start of text not yet emitted (for the merge behaviours)
        var position = 0;
        var lastWasMatch = false; // for Contiguous: the previous emitted segment was a match
        while (position <= text.Length)
        {
            var start = text.Length;
            var end = text.Length;
            var found = position < text.Length && matcher.TryFind(text, position, out start, out end);
            if (!found)
                (start, end) = (text.Length, text.Length);

            // The gap before the match, then the match itself; invert swaps which is which.
            Segment(position, start, isMatch: invert);
            if (found)
                Segment(start, end, isMatch: !invert);
            if (!found)
                break;
            position = end;
        }
        Flush(text.Length);

        void Segment(int from, int to, bool isMatch)
        {
            if (to <= from)
                return;
            switch (behavior)
            {
                case SplitBehavior.Removed:
                    if (!isMatch)
                        Emit(from, to);
                    pendingStart = to;
                    break;
                case SplitBehavior.Isolated:
                    Emit(from, to);
                    pendingStart = to;
                    break;
                case SplitBehavior.MergedWithPrevious:
                    // A match closes the piece that began before it.
                    if (isMatch)
                    {
                        Emit(pendingStart, to);
                        pendingStart = to;
                    }
                    break;
                case SplitBehavior.MergedWithNext:
                    // A match opens a new piece; the text before it is complete.
                    if (isMatch)
                    {
                        Emit(pendingStart, from);
                        pendingStart = from;
                    }
                    break;
                case SplitBehavior.Contiguous:
                    if (isMatch && lastWasMatch)
                        break; // extend the running match segment
                    Emit(pendingStart, from);
                    pendingStart = from;
                    lastWasMatch = isMatch;
                    break;
            }
        }

        void Flush(int to)
        {
            if (behavior is SplitBehavior.MergedWithPrevious or SplitBehavior.MergedWithNext or SplitBehavior.Contiguous)
                Emit(pendingStart, to);
        }

        void Emit(int from, int to)
        {
            if (to > from)
                output.Add(piece with { Start = piece.Start + from, Length = to - from, AtTextStart = piece.AtTextStart && from == 0 });
        }
    }
}

/// <summary>Splits digits from the rest: each digit alone, or runs of digits.</summary>
public sealed class DigitsPreTokenizer(bool individualDigits) : PreTokenizer
{
    private readonly SplitPreTokenizer _split = new(new DigitMatcher(), individualDigits ? SplitBehavior.Isolated : SplitBehavior.Contiguous, invert: false);

    public override void Split(List<Piece> pieces, List<Piece> scratch) => _split.Split(pieces, scratch);

    protected override void SplitPiece(Piece piece, List<Piece> output) => throw new InvalidOperationException();

    private sealed class DigitMatcher : PatternMatcher
    {
        public override bool TryFind(ReadOnlySpan<char> text, int from, out int start, out int end)
        {
            for (var i = from; i < text.Length;)
            {
                var r = At(text, i, out var w);
                if (IsNumber(r))
                {
                    (start, end) = (i, i + w);
                    return true;
                }
                i += w;
            }
            (start, end) = (0, 0);
            return false;
        }
    }
}
