using System.Text;
using System.Text.RegularExpressions;
using static InferenceServer.Tokenizer.PreTokenization.CodePoints;

namespace InferenceServer.Tokenizer.PreTokenization;

/// <summary>Finds the matches of a split pattern, leftmost first, as the reference's regex engine does.</summary>
public abstract class PatternMatcher
{
    /// <summary>The first match starting at or after <paramref name="from"/>; false when there is none.</summary>
    public abstract bool TryFind(ReadOnlySpan<char> text, int from, out int start, out int end);

    /// <summary>
    /// The matcher for a pattern: a hand-written one for the patterns the common tokenizer
    /// families use (exact on code points, and fast), otherwise .NET's regex engine.
    /// </summary>
    public static PatternMatcher ForRegex(string pattern) => pattern switch
    {
        KnownPatterns.Gpt2 => new Gpt2Matcher(),
        KnownPatterns.Llama3 => new Llama3Matcher(maxDigits: 3),
        KnownPatterns.Qwen2 => new Llama3Matcher(maxDigits: 1),
        KnownPatterns.DigitsUpTo3 => new DigitGroupMatcher(3),
        KnownPatterns.DeepSeekCjk => new DeepSeekCjkMatcher(),
        KnownPatterns.DeepSeekWords => new DeepSeekWordMatcher(),
        _ => new RegexMatcher(pattern),
    };

    public static PatternMatcher ForLiteral(string literal) => new LiteralMatcher(literal);
}

/// <summary>The exact pattern strings (as they read after JSON unescaping) that have hand-written matchers.</summary>
public static class KnownPatterns
{
    public const string Gpt2 = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
    public const string Llama3 = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    public const string Qwen2 = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    public const string DigitsUpTo3 = @"\p{N}{1,3}";
    public const string DeepSeekCjk = "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+";
    public const string DeepSeekWords = "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+";
}

/// <summary>A matcher that tries its alternatives at each position in turn.</summary>
internal abstract class PositionalMatcher : PatternMatcher
{
    /// <summary>End of the match starting exactly at <paramref name="i"/>, or -1.</summary>
    protected abstract int MatchAt(ReadOnlySpan<char> s, int i);

    public override bool TryFind(ReadOnlySpan<char> text, int from, out int start, out int end)
    {
        for (var i = from; i < text.Length;)
        {
            var e = MatchAt(text, i);
            if (e > i)
            {
                (start, end) = (i, e);
                return true;
            }
            At(text, i, out var width);
            i += width;
        }
        (start, end) = (0, 0);
        return false;
    }

    /// <summary>End of the run of code points from <paramref name="i"/> that satisfy <paramref name="test"/>, at most <paramref name="max"/> of them.</summary>
    protected static int Run(ReadOnlySpan<char> s, int i, Func<Rune, bool> test, int max = int.MaxValue)
    {
        var count = 0;
        while (i < s.Length && count < max)
        {
            var r = At(s, i, out var w);
            if (!test(r))
                break;
            i += w;
            count++;
        }
        return i;
    }

    /// <summary>
    /// The three whitespace alternatives the families share, in their order:
    /// <c>\s*[\r\n]+</c> (when <paramref name="lineBreakRun"/>), then <c>\s+(?!\S)</c>, then <c>\s+</c>.
    /// </summary>
    protected static int Whitespace(ReadOnlySpan<char> s, int i, bool lineBreakRun)
    {
        var runEnd = Run(s, i, IsWhiteSpace);
        if (runEnd == i)
            return -1;
        if (lineBreakRun)
        {
            // \s* backs off until [\r\n]+ can match: the match ends after the run's last line break.
            var lastBreakEnd = -1;
            for (var j = i; j < runEnd;)
            {
                var r = At(s, j, out var w);
                j += w;
                if (IsLineBreak(r))
                    lastBreakEnd = j;
            }
            if (lastBreakEnd > 0)
                return lastBreakEnd;
        }
        // \s+(?!\S): the whole run at the end of the text, otherwise all but its last code point.
        if (runEnd == s.Length)
            return runEnd;
        var lastStart = runEnd - 1;
        if (char.IsLowSurrogate(s[lastStart]) && lastStart > i && char.IsHighSurrogate(s[lastStart - 1]))
            lastStart--;
        if (lastStart > i)
            return lastStart;
        return runEnd; // \s+
    }

    /// <summary>'s|'t|'re|'ve|'m|'ll|'d, optionally ignoring case.</summary>
    protected static int Contraction(ReadOnlySpan<char> s, int i, bool ignoreCase)
    {
        if (s[i] != '\'' || i + 1 >= s.Length)
            return -1;
        static char Fold(char c) => c == '\u017F' ? 's' : char.ToLowerInvariant(c);
        var a = ignoreCase ? Fold(s[i + 1]) : s[i + 1];
        if (a is 's' or 't' or 'm' or 'd')
            return i + 2;
        if (i + 2 >= s.Length)
            return -1;
        var b = ignoreCase ? Fold(s[i + 2]) : s[i + 2];
        return (a, b) is ('r', 'e') or ('v', 'e') or ('l', 'l') ? i + 3 : -1;
    }
}

/// <summary>GPT-2's split pattern (ByteLevel with use_regex).</summary>
internal sealed class Gpt2Matcher : PositionalMatcher
{
    private static readonly Func<Rune, bool> Other = r => !IsWhiteSpace(r) && !IsLetter(r) && !IsNumber(r);

    protected override int MatchAt(ReadOnlySpan<char> s, int i)
    {
        var e = Contraction(s, i, ignoreCase: false);
        if (e > 0)
            return e;
        // " ?X+" for letters, numbers and "other": an optional space, then the run.
        var j = s[i] == ' ' && i + 1 < s.Length ? i + 1 : i;
        var r = At(s, j, out _);
        if (j > i || !IsWhiteSpace(r))
        {
            if (IsLetter(r))
                return Run(s, j, IsLetter);
            if (IsNumber(r))
                return Run(s, j, IsNumber);
            if (Other(r))
                return Run(s, j, Other);
        }
        return Whitespace(s, i, lineBreakRun: false);
    }
}

/// <summary>Llama 3's split pattern, and Qwen 2's (the same with single digits).</summary>
internal sealed class Llama3Matcher(int maxDigits) : PositionalMatcher
{
    private static readonly Func<Rune, bool> Other = r => !IsWhiteSpace(r) && !IsLetter(r) && !IsNumber(r);

    protected override int MatchAt(ReadOnlySpan<char> s, int i)
    {
        var e = Contraction(s, i, ignoreCase: true);
        if (e > 0)
            return e;

        var r = At(s, i, out var w);
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if (IsLetter(r))
            return Run(s, i, IsLetter);
        if (!IsLineBreak(r) && !IsNumber(r) && i + w < s.Length && IsLetter(At(s, i + w, out _)))
            return Run(s, i + w, IsLetter);
        // \p{N}{1,maxDigits}
        if (IsNumber(r))
            return Run(s, i, IsNumber, maxDigits);
        // " ?[^\s\p{L}\p{N}]+[\r\n]*"
        var j = r.Value == ' ' ? i + 1 : i;
        if (j < s.Length && Other(At(s, j, out _)))
            return Run(s, Run(s, j, Other), IsLineBreak);
        return Whitespace(s, i, lineBreakRun: true);
    }
}

/// <summary><c>\p{N}{1,n}</c>.</summary>
internal sealed class DigitGroupMatcher(int maxDigits) : PositionalMatcher
{
    protected override int MatchAt(ReadOnlySpan<char> s, int i) =>
        IsNumber(At(s, i, out _)) ? Run(s, i, IsNumber, maxDigits) : -1;
}

/// <summary>DeepSeek's run of CJK ideographs and kana.</summary>
internal sealed class DeepSeekCjkMatcher : PositionalMatcher
{
    private static bool IsCjk(Rune r) => r.Value is (>= 0x4E00 and <= 0x9FA5) or (>= 0x3040 and <= 0x309F) or (>= 0x30A0 and <= 0x30FF);

    protected override int MatchAt(ReadOnlySpan<char> s, int i) => IsCjk(At(s, i, out _)) ? Run(s, i, IsCjk) : -1;
}

/// <summary>DeepSeek V3's word pattern (letters with marks, punctuation and symbol runs, whitespace).</summary>
internal sealed class DeepSeekWordMatcher : PositionalMatcher
{
    private static readonly Func<Rune, bool> LetterOrMark = r => IsLetter(r) || IsMark(r);
    private static readonly Func<Rune, bool> PunctuationOrSymbol = r => IsPunctuation(r) || IsSymbol(r);
    private static readonly Func<Rune, bool> AsciiLetter = r => r.Value is (>= 'A' and <= 'Z') or (>= 'a' and <= 'z');

    protected override int MatchAt(ReadOnlySpan<char> s, int i)
    {
        var r = At(s, i, out var w);
        // [!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+
        if (r.Value < 128 && "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~".Contains((char)r.Value, StringComparison.Ordinal)
            && i + 1 < s.Length && AsciiLetter(At(s, i + 1, out _)))
            return Run(s, i + 1, AsciiLetter);
        // [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+
        if (!IsLineBreak(r) && !IsLetter(r) && !IsPunctuation(r) && !IsSymbol(r) && i + w < s.Length && LetterOrMark(At(s, i + w, out _)))
            return Run(s, i + w, LetterOrMark);
        if (LetterOrMark(r))
            return Run(s, i, LetterOrMark);
        // " ?[\p{P}\p{S}]+[\r\n]*"
        var j = r.Value == ' ' ? i + 1 : i;
        if (j < s.Length && PunctuationOrSymbol(At(s, j, out _)))
            return Run(s, Run(s, j, PunctuationOrSymbol), IsLineBreak);
        return Whitespace(s, i, lineBreakRun: true);
    }
}

/// <summary>Any other pattern, through .NET's backtracking engine (UTF-16: a surrogate pair is two chars to it).</summary>
internal sealed class RegexMatcher(string pattern) : PatternMatcher
{
    private readonly Regex _regex = new(pattern, RegexOptions.Compiled | RegexOptions.CultureInvariant);

    public override bool TryFind(ReadOnlySpan<char> text, int from, out int start, out int end)
    {
        foreach (var match in _regex.EnumerateMatches(text, from))
        {
            if (match.Length == 0)
                continue;
            (start, end) = (match.Index, match.Index + match.Length);
            return true;
        }
        (start, end) = (0, 0);
        return false;
    }
}

internal sealed class LiteralMatcher(string literal) : PatternMatcher
{
    public override bool TryFind(ReadOnlySpan<char> text, int from, out int start, out int end)
    {
        var index = literal.Length == 0 ? -1 : text[from..].IndexOf(literal, StringComparison.Ordinal);
        (start, end) = index < 0 ? (0, 0) : (from + index, from + index + literal.Length);
        return index >= 0;
    }
}
