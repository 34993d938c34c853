using System.Buffers;
using System.Globalization;
using System.Text;

namespace InferenceServer.Tokenizer.PreTokenization;

/// <summary>
/// Unicode classes the way the reference's regex engine sees them: on code points, so a letter
/// outside the Basic Multilingual Plane (a surrogate pair in .NET strings) is one letter.
/// </summary>
internal static class CodePoints
{
    /// <summary>The code point at <paramref name="index"/> and how many chars it takes.</summary>
    public static Rune At(ReadOnlySpan<char> text, int index, out int width)
    {
        if (Rune.DecodeFromUtf16(text[index..], out var rune, out width) != OperationStatus.Done)
        {
            width = 1;
            return Rune.ReplacementChar;
        }
        return rune;
    }

    public static UnicodeCategory Category(Rune r) => Rune.GetUnicodeCategory(r);

    public static bool IsLetter(Rune r) => Category(r) is UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter
        or UnicodeCategory.TitlecaseLetter or UnicodeCategory.ModifierLetter or UnicodeCategory.OtherLetter;

    public static bool IsNumber(Rune r) => Category(r) is UnicodeCategory.DecimalDigitNumber or UnicodeCategory.LetterNumber or UnicodeCategory.OtherNumber;

    public static bool IsMark(Rune r) => Category(r) is UnicodeCategory.NonSpacingMark or UnicodeCategory.SpacingCombiningMark or UnicodeCategory.EnclosingMark;

    public static bool IsPunctuation(Rune r) => Category(r) is UnicodeCategory.ConnectorPunctuation or UnicodeCategory.DashPunctuation
        or UnicodeCategory.OpenPunctuation or UnicodeCategory.ClosePunctuation or UnicodeCategory.InitialQuotePunctuation
        or UnicodeCategory.FinalQuotePunctuation or UnicodeCategory.OtherPunctuation;

    public static bool IsSymbol(Rune r) => Category(r) is UnicodeCategory.MathSymbol or UnicodeCategory.CurrencySymbol
        or UnicodeCategory.ModifierSymbol or UnicodeCategory.OtherSymbol;

    /// <summary>Unicode White_Space, which is what \s means to the reference.</summary>
    public static bool IsWhiteSpace(Rune r) => Rune.IsWhiteSpace(r);

    public static bool IsLineBreak(Rune r) => r.Value is '\r' or '\n';
}
