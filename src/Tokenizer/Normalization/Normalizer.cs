using System.Text;
using System.Text.RegularExpressions;

namespace InferenceServer.Tokenizer.Normalization;

/// <summary>tokenizer.json "normalizer": rewrites text before it is split into words.</summary>
public abstract class Normalizer
{
    public abstract string Normalize(string text);
}

/// <summary>
/// NFC, NFD, NFKC or NFKD, on the tokenizer's own Unicode tables (<see cref="UnicodeNormalization"/>):
/// the same result with or without ICU, in invariant globalization mode too.
/// </summary>
public sealed class UnicodeNormalizer(NormalizationForm form) : Normalizer
{
    public override string Normalize(string text) => UnicodeNormalization.Normalize(text, form);
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
