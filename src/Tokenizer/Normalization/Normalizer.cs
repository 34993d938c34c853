using System.Text;
using System.Text.RegularExpressions;

namespace InferenceServer.Tokenizer.Normalization;

/// <summary>tokenizer.json "normalizer": rewrites text before it is split into words.</summary>
public abstract class Normalizer
{
    public abstract string Normalize(string text);
}

public sealed class UnicodeNormalizer(NormalizationForm form) : Normalizer
{
    public override string Normalize(string text)
    {
        // Plain ASCII is already in every normal form; skipping it avoids a copy of most code.
        if (Ascii.IsValid(text))
            return text;
        try
        {
            return text.Normalize(form);
        }
        catch (ArgumentException)
        {
            return NormalizeAroundNoncharacters(text);
        }
    }

    private string NormalizeAroundNoncharacters(string text)
    {
        // .NET refuses to normalize text with noncharacters (U+FFFE, U+FDD0...). They never
        // combine with a neighbour, so the text between them is normalized on its own.
        var builder = new StringBuilder(text.Length);
        var segmentStart = 0;
        for (var i = 0; i < text.Length;)
        {
            var rune = Rune.GetRuneAt(text, i);
            if (IsNoncharacter(rune))
            {
                builder.Append(text.AsSpan(segmentStart, i - segmentStart).ToString().Normalize(form));
                builder.Append(rune.ToString());
                segmentStart = i + rune.Utf16SequenceLength;
            }
            i += rune.Utf16SequenceLength;
        }
        builder.Append(text.AsSpan(segmentStart).ToString().Normalize(form));
        return builder.ToString();
    }

    private static bool IsNoncharacter(Rune r) => (r.Value & 0xFFFE) == 0xFFFE || r.Value is >= 0xFDD0 and <= 0xFDEF;
}

public sealed class LowercaseNormalizer : Normalizer
{
    public override string Normalize(string text) => text.ToLowerInvariant();
}

/// <summary>Adds a prefix to non-empty text (SentencePiece-style "▁" before the first word).</summary>
public sealed class PrependNormalizer(string prefix) : Normalizer
{
    public override string Normalize(string text) => text.Length == 0 ? text : prefix + text;
}

public sealed class ReplaceNormalizer : Normalizer
{
    private readonly string? _literal;
    private readonly Regex? _regex;
    private readonly string _content;

    public ReplaceNormalizer(string? literal, Regex? regex, string content)
    {
        _literal = literal;
        _regex = regex;
        _content = content;
    }

    public override string Normalize(string text) => _literal is not null
        ? (_literal.Length == 0 ? text : text.Replace(_literal, _content, StringComparison.Ordinal))
        : _regex!.Replace(text, _content);
}

public sealed class StripNormalizer(bool left, bool right) : Normalizer
{
    public override string Normalize(string text) => (left, right) switch
    {
        (true, true) => text.Trim(),
        (true, false) => text.TrimStart(),
        (false, true) => text.TrimEnd(),
        _ => text,
    };
}

public sealed class SequenceNormalizer(IReadOnlyList<Normalizer> normalizers) : Normalizer
{
    public override string Normalize(string text)
    {
        foreach (var normalizer in normalizers)
            text = normalizer.Normalize(text);
        return text;
    }
}
