using System.Text;
using InferenceServer.Tokenizer.Normalization;

namespace InferenceServer.Tokenizer.Tests;

/// <summary>
/// The managed normalizer against .NET's string.Normalize, which here runs on ICU (the test host is not
/// in invariant globalization mode; the shipped programs are, see the CLI tests). ICU and our tables
/// must be of the same Unicode version for the every-code-point test: libicu72 and 15.0.0 on this machine.
/// </summary>
public sealed class UnicodeNormalizationTests
{
    private static readonly NormalizationForm[] Forms =
        [NormalizationForm.FormC, NormalizationForm.FormD, NormalizationForm.FormKC, NormalizationForm.FormKD];

    public UnicodeNormalizationTests() =>
        Assert.True("e\u0301".Normalize() == "\u00E9", "the test host runs in invariant globalization mode: there is no ICU to compare with");

    /// <summary>ICU's answer; it refuses noncharacters (U+FFFE, U+FDD0...), which every form leaves as they are.</summary>
    private static string Icu(string text, NormalizationForm form)
    {
        try
        {
            return text.Normalize(form);
        }
        catch (ArgumentException)
        {
            return text;
        }
    }

    [Fact]
    public void Every_code_point_normalizes_as_ICU_does_in_all_four_forms_and_composes_back()
    {
        var failures = new List<string>();
        for (var cp = 0; cp <= 0x10FFFF; cp++)
        {
            if (cp is >= 0xD800 and <= 0xDFFF)
                continue;
            var text = char.ConvertFromUtf32(cp);
            foreach (var form in Forms)
            {
                var expected = Icu(text, form);
                var actual = UnicodeNormalization.Normalize(text, form);
                if (actual != expected)
                    failures.Add($"U+{cp:X4} {form}: {Hex(actual)} instead of {Hex(expected)}");
                // The decomposed forms composed again: every composition pair, including characters
                // that only compose with what precedes them (found by neither form alone).
                if (form is NormalizationForm.FormD or NormalizationForm.FormKD && expected != text)
                {
                    var composeForm = form == NormalizationForm.FormD ? NormalizationForm.FormC : NormalizationForm.FormKC;
                    var composed = UnicodeNormalization.Normalize(expected, composeForm);
                    if (composed != Icu(expected, composeForm))
                        failures.Add($"{composeForm} of {Hex(expected)} (from U+{cp:X4}): {Hex(composed)} instead of {Hex(Icu(expected, composeForm))}");
                }
            }
            if (failures.Count > 20)
                break;
        }
        Assert.True(failures.Count == 0, string.Join("\n", failures));
    }

    public static TheoryData<string, string, string> Sequences => new()
    {
        // input, NFC, NFD (hand-checked; all four forms are compared with ICU as well)
        { "e\u0301", "\u00E9", "e\u0301" },
        { "\u00E9", "\u00E9", "e\u0301" },
        { "caf\u00E9 cafe\u0301", "caf\u00E9 caf\u00E9", "cafe\u0301 cafe\u0301" },
        { "\u212B", "\u00C5", "A\u030A" },               // ANGSTROM SIGN: a singleton, never composed back
        { "\u2126", "\u03A9", "\u03A9" },                // OHM SIGN
        { "\u0344", "\u0308\u0301", "\u0308\u0301" },    // a non-starter decomposition
        { "\u0958", "\u0915\u093C", "\u0915\u093C" },    // a composition exclusion
        { "\u0915\u093C", "\u0915\u093C", "\u0915\u093C" },
        { "a\u0301\u0323", "\u1EA1\u0301", "a\u0323\u0301" }, // reordering, then the dot below composes first
        { "a\u0323\u0301", "\u1EA1\u0301", "a\u0323\u0301" },
        { "e\u0302\u0301", "\u1EBF", "e\u0302\u0301" },  // composes twice: e + circumflex, then + acute
        { "a\u0301\u0301", "\u00E1\u0301", "a\u0301\u0301" }, // the second acute is blocked by the first
        { "A\u0328\u0301", "\u0104\u0301", "A\u0328\u0301" },
        { "a\u0301\u0316\u0300\u0317", "\u00E1\u0316\u0317\u0300", "a\u0316\u0317\u0301\u0300" }, // stable order
        { "a\u05B0\u0301", "\u00E1\u05B0", "a\u05B0\u0301" }, // sheva (class 10) does not block acute (230)
        { "\u1100\u1161", "\uAC00", "\u1100\u1161" },    // Hangul LV
        { "\u1100\u1161\u11A8", "\uAC01", "\u1100\u1161\u11A8" }, // LVT
        { "\uAC00\u11A8", "\uAC01", "\u1100\u1161\u11A8" },
        { "\uAC01\u11A8", "\uAC01\u11A8", "\u1100\u1161\u11A8\u11A8" }, // LVT + T: no more
        { "\u1100\u0301\u1161", "\u1100\u0301\u1161", "\u1100\u0301\u1161" }, // blocked jamo
        { "\uD804\uDC99\uD804\uDCBA", "\uD804\uDC9A", "\uD804\uDC99\uD804\uDCBA" }, // astral: KAITHI DDDHA
        { "\uD834\uDD5E", "\uD834\uDD57\uD834\uDD65", "\uD834\uDD57\uD834\uDD65" }, // excluded astral composite
        { "abc", "abc", "abc" },
        { "", "", "" },
    };

    [Theory]
    [MemberData(nameof(Sequences))]
    public void Sequences_normalize_as_expected_and_as_ICU_does(string input, string nfc, string nfd)
    {
        Assert.Equal(Hex(nfc), Hex(UnicodeNormalization.Normalize(input, NormalizationForm.FormC)));
        Assert.Equal(Hex(nfd), Hex(UnicodeNormalization.Normalize(input, NormalizationForm.FormD)));
        foreach (var form in Forms)
            Assert.Equal(Hex(Icu(input, form)), Hex(UnicodeNormalization.Normalize(input, form)));
    }

    [Fact]
    public void Random_mixes_of_marks_jamo_and_composites_normalize_as_ICU_does()
    {
        int[] pool =
        [
            'a', 'e', 'A', 'E', 'o', 'u', 's', ' ', 0xE9, 0xC5, 0x1E9B, 0x017F, 0x212B, 0x2126, 0xFB01, 0x00BD, 0x2460,
            0x0300, 0x0301, 0x0302, 0x0308, 0x0316, 0x0323, 0x0328, 0x0334, 0x0338, 0x0344, 0x0345, 0x0340, 0x0F73,
            0x05B0, 0x05B4, 0x05D9, 0x0591, 0x093C, 0x0915, 0x0958, 0x0CC6, 0x0CC2, 0x0CD5, 0x3099, 0x304B, 0x309B,
            0x1100, 0x1112, 0x1161, 0x1175, 0x11A8, 0x11C2, 0xAC00, 0xAC01, 0xD7A3, 0x1DC0, 0x20D0, 0x302A,
            0x0391, 0x03B1, 0x1F00, 0x0313, 0x0342, 0x0627, 0x0653, 0x0654, 0x0655, 0x0E01, 0x0E48,
            0x1D157, 0x1D165, 0x1D16E, 0x1D15E, 0x11099, 0x110BA, 0x1D400, 0x2F800, 0xFF76, 0xFF9E, 0x3300,
        ];
        var random = new Random(20240501);
        var builder = new StringBuilder();
        var failures = new List<string>();
        for (var n = 0; n < 20_000 && failures.Count < 10; n++)
        {
            builder.Clear();
            var length = random.Next(1, 12);
            for (var i = 0; i < length; i++)
                builder.Append(char.ConvertFromUtf32(pool[random.Next(pool.Length)]));
            var text = builder.ToString();
            foreach (var form in Forms)
            {
                var expected = Icu(text, form);
                var actual = UnicodeNormalization.Normalize(text, form);
                if (actual != expected)
                    failures.Add($"{Hex(text)} {form}: {Hex(actual)} instead of {Hex(expected)}");
            }
        }
        Assert.True(failures.Count == 0, string.Join("\n", failures));
    }

    [Fact]
    public void Lone_surrogates_are_left_as_they_are()
    {
        foreach (var form in Forms)
        {
            Assert.Equal("a\uD800\u0301", UnicodeNormalization.Normalize("a\uD800\u0301", form));
            Assert.Equal("\uDC00x\uD83D", UnicodeNormalization.Normalize("\uDC00x\uD83D", form));
        }
        Assert.Equal("\uDC00\u00E9", UnicodeNormalization.Normalize("\uDC00e\u0301", NormalizationForm.FormC));
    }

    [Fact]
    public void Text_already_in_the_form_comes_back_as_the_same_string()
    {
        // The same instance, not an equal copy: the tokenizer normalizes every input, and most are
        // already in the form. (Whether anything is allocated on the way is measured by the
        // tokenizer benchmark's memory diagnoser, not here.)
        string[] texts =
        [
            "def f(x):\n    return x\n",
            "caf\u00E9 na\u00EFve \u00FCber \uAC00\uD55C \u4E2D\u6587 \uD83D\uDE00 \u05E9\u05B8\u05C1", // NFC, yet not below its threshold
        ];
        foreach (var text in texts)
            Assert.Same(text, UnicodeNormalization.Normalize(text, NormalizationForm.FormC));
        var ascii = texts[0];
        foreach (var form in Forms)
            Assert.Same(ascii, UnicodeNormalization.Normalize(ascii, form));
        var decomposed = "cafe\u0301";
        Assert.Same(decomposed, UnicodeNormalization.Normalize(decomposed, NormalizationForm.FormD));
    }

    [Fact]
    public void Long_text_with_a_few_changes_is_normalized_around_them()
    {
        var line = "    return e\u0301t\u00E9 + \uAC00\u11A8 # \uFB01n\n";
        var text = string.Concat(Enumerable.Repeat(line, 2000));
        foreach (var form in Forms)
            Assert.Equal(Icu(text, form), UnicodeNormalization.Normalize(text, form));
    }

    private static string Hex(string text)
    {
        var parts = new List<string>();
        for (var i = 0; i < text.Length; i++)
        {
            if (char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                parts.Add($"{char.ConvertToUtf32(text[i], text[i + 1]):X4}");
                i++;
            }
            else
            {
                parts.Add($"{(int)text[i]:X4}");
            }
        }
        return string.Join(' ', parts);
    }
}
