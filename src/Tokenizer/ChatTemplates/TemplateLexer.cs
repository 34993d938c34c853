using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace InferenceServer.Tokenizer.ChatTemplates;

internal enum TokenKind
{
    Name,
    String,
    Integer,
    Float,
    Operator,
    End,
}

internal readonly record struct Token(TokenKind Kind, string Text, int Line);

/// <summary>One piece of a template: literal text, an {{ expression }} or a {% statement %}, with its tokens.</summary>
internal abstract record TemplatePart(int Line)
{
    public sealed record Text(string Value, int Line) : TemplatePart(Line);
    public sealed record Output(List<Token> Tokens, int Line) : TemplatePart(Line);
    public sealed record Statement(List<Token> Tokens, int Line) : TemplatePart(Line);
}

/// <summary>
/// Splits a template into text, {{ }} and {% %} parts ({# #} comments dropped) and tokenizes the tags.
/// As transformers renders chat templates (trim_blocks and lstrip_blocks on), and as Hugging Face's
/// JavaScript renderer implements those options: spaces and tabs before a tag opener at the start of a
/// line go, and so does one newline after a "%}", "#}" or "-}". A "-" inside a tag's delimiter strips all
/// whitespace on that side.
/// </summary>
internal static partial class TemplateLexer
{
    [GeneratedRegex(@"^[ \t]*(\{[#%-])", RegexOptions.Multiline)]
    private static partial Regex LeadingBlockSpace();

    [GeneratedRegex(@"([#%-]\})\n")]
    private static partial Regex NewlineAfterBlock();

    [GeneratedRegex(@"(\s*)\{%(-?)\s*(?:end)?generation\s*(-?)%\}(\s*)", RegexOptions.Singleline)]
    private static partial Regex GenerationTag();

    // Longest first, so "==" is not read as "=" "=".
    private static readonly string[] Operators =
    [
        "//", "**", "==", "!=", "<=", ">=",
        "+", "-", "*", "/", "%", "~", "<", ">", "=", "(", ")", "[", "]", "{", "}", ",", ".", ":", "|",
    ];

    public static List<TemplatePart> Split(string source)
    {
        source = LeadingBlockSpace().Replace(source, "$1");
        source = NewlineAfterBlock().Replace(source, "$1");
        // {% generation %} marks (for training masks) render as nothing.
        source = GenerationTag().Replace(source, m => (m.Groups[2].Length > 0 ? "" : m.Groups[1].Value) + (m.Groups[3].Length > 0 ? "" : m.Groups[4].Value));

        var parts = new List<TemplatePart>();
        var pos = 0;
        var line = 1;
        var trimNext = false;
        while (pos < source.Length)
        {
            var open = FindOpener(source, pos);
            var textEnd = open < 0 ? source.Length : open;
            var text = source[pos..textEnd];
            var stripBefore = open >= 0 && open + 2 < source.Length && source[open + 2] == '-';
            if (trimNext)
                text = text.TrimStart();
            if (stripBefore)
                text = text.TrimEnd();
            if (text.Length > 0)
                parts.Add(new TemplatePart.Text(text, line));
            line += Count(source, pos, textEnd);
            if (open < 0)
                break;

            var kind = source[open + 1];
            var closer = kind switch { '{' => "}}", '%' => "%}", _ => "#}" };
            var inner = open + 2 + (stripBefore ? 1 : 0);
            if (kind == '#')
            {
                var endComment = source.IndexOf("#}", inner, StringComparison.Ordinal);
                if (endComment < 0)
                    throw new ChatTemplateException($"line {line}: a comment '{{#' is never closed with '#}}'");
                trimNext = source[endComment - 1] == '-' && endComment - 1 >= inner;
                line += Count(source, open, endComment + 2);
                pos = endComment + 2;
                continue;
            }
            var tokens = new List<Token>();
            var startLine = line;
            var p = inner;
            var braces = 0; // a dict literal's closing braces are not the tag's end
            while (true)
            {
                while (p < source.Length && char.IsWhiteSpace(source[p]))
                {
                    if (source[p] == '\n')
                        line++;
                    p++;
                }
                if (p >= source.Length)
                    throw new ChatTemplateException($"line {startLine}: a tag opened with '{source.Substring(open, 2)}' is never closed with '{closer}'");
                if (braces == 0 && source[p] == '-' && string.CompareOrdinal(source, p + 1, closer, 0, 2) == 0)
                {
                    trimNext = true;
                    p += 3;
                    break;
                }
                if (braces == 0 && string.CompareOrdinal(source, p, closer, 0, 2) == 0)
                {
                    trimNext = false;
                    p += 2;
                    break;
                }
                p = ReadToken(source, p, line, tokens);
                braces += tokens[^1].Text switch { "{" when tokens[^1].Kind == TokenKind.Operator => 1, "}" when tokens[^1].Kind == TokenKind.Operator => -1, _ => 0 };
            }
            tokens.Add(new Token(TokenKind.End, "", line));
            parts.Add(kind == '{' ? new TemplatePart.Output(tokens, startLine) : new TemplatePart.Statement(tokens, startLine));
            pos = p;
        }
        return parts;
    }

    private static int FindOpener(string source, int from)
    {
        for (var i = source.IndexOf('{', from); i >= 0 && i + 1 < source.Length; i = source.IndexOf('{', i + 1))
        {
            if (source[i + 1] is '{' or '%' or '#')
                return i;
        }
        return -1;
    }

    private static int Count(string source, int from, int to)
    {
        var n = 0;
        for (var i = from; i < to; i++)
        {
            if (source[i] == '\n')
                n++;
        }
        return n;
    }

    private static int ReadToken(string s, int p, int line, List<Token> tokens)
    {
        var c = s[p];
        if (char.IsLetter(c) || c == '_')
        {
            var start = p;
            while (p < s.Length && (char.IsLetterOrDigit(s[p]) || s[p] == '_'))
                p++;
            tokens.Add(new Token(TokenKind.Name, s[start..p], line));
            return p;
        }
        if (char.IsAsciiDigit(c))
        {
            var start = p;
            while (p < s.Length && (char.IsAsciiDigit(s[p]) || s[p] == '_'))
                p++;
            var isFloat = p + 1 < s.Length && s[p] == '.' && char.IsAsciiDigit(s[p + 1]);
            if (isFloat)
            {
                p++;
                while (p < s.Length && char.IsAsciiDigit(s[p]))
                    p++;
            }
            tokens.Add(new Token(isFloat ? TokenKind.Float : TokenKind.Integer, s[start..p].Replace("_", "", StringComparison.Ordinal), line));
            return p;
        }
        if (c is '\'' or '"')
            return ReadString(s, p, line, tokens);
        foreach (var op in Operators)
        {
            if (string.CompareOrdinal(s, p, op, 0, op.Length) == 0)
            {
                tokens.Add(new Token(TokenKind.Operator, op, line));
                return p + op.Length;
            }
        }
        throw new ChatTemplateException($"line {line}: unexpected character '{c}'");
    }

    private static int ReadString(string s, int p, int line, List<Token> tokens)
    {
        var quote = s[p++];
        var text = new StringBuilder();
        while (true)
        {
            if (p >= s.Length)
                throw new ChatTemplateException($"line {line}: a string is never closed with {quote}");
            var c = s[p++];
            if (c == quote)
                break;
            if (c != '\\' || p >= s.Length)
            {
                text.Append(c);
                continue;
            }
            var e = s[p++];
            switch (e)
            {
                case 'n': text.Append('\n'); break;
                case 't': text.Append('\t'); break;
                case 'r': text.Append('\r'); break;
                case 'b': text.Append('\b'); break;
                case 'f': text.Append('\f'); break;
                case 'v': text.Append('\v'); break;
                case '0': text.Append('\0'); break;
                case '\\' or '\'' or '"': text.Append(e); break;
                case 'u' when p + 4 <= s.Length && int.TryParse(s.AsSpan(p, 4), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var code):
                    text.Append((char)code);
                    p += 4;
                    break;
                default: text.Append('\\').Append(e); break;
            }
        }
        tokens.Add(new Token(TokenKind.String, text.ToString(), line));
        return p;
    }
}
