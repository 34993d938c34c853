using System.Text;
using System.Text.RegularExpressions;
using InferenceServer.Tokenizer.Model;

namespace InferenceServer.Tokenizer.Decoding;

/// <summary>
/// tokenizer.json "decoder": turns the list of token strings back into text. Each step maps the
/// list to a new list, as the reference's decoders do; the result is the concatenation.
/// </summary>
public abstract class TokenDecoder
{
    public abstract void Decode(List<string> tokens);

    /// <summary>This step applied to one token on its own (for steps that work token by token).</summary>
    internal string DecodeOne(string token)
    {
        var list = new List<string> { token };
        Decode(list);
        return string.Concat(list);
    }
}

/// <summary>Byte-level tokens back to bytes, and the bytes of all tokens to text (invalid UTF-8 becomes U+FFFD).</summary>
public sealed class ByteLevelDecoder : TokenDecoder
{
    public override void Decode(List<string> tokens)
    {
        var bytes = new List<byte>();
        foreach (var token in tokens)
            AppendBytes(token, bytes);
        tokens.Clear();
        tokens.Add(Encoding.UTF8.GetString(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(bytes)));
    }

    /// <summary>
    /// The bytes a token stands for: its characters mapped through the byte alphabet, or, when
    /// one of them is not in it (an added token such as a special marker), its own UTF-8.
    /// </summary>
    public static void AppendBytes(string token, List<byte> bytes)
    {
        var mark = bytes.Count;
        foreach (var c in token)
        {
            if (!ByteLevelAlphabet.TryCharToByte(c, out var b))
            {
                bytes.RemoveRange(mark, bytes.Count - mark);
                bytes.AddRange(Encoding.UTF8.GetBytes(token));
                return;
            }
            bytes.Add(b);
        }
    }
}

public sealed class ReplaceDecoder(string? literal, Regex? regex, string content) : TokenDecoder
{
    public override void Decode(List<string> tokens)
    {
        for (var i = 0; i < tokens.Count; i++)
        {
            tokens[i] = literal is not null
                ? (literal.Length == 0 ? tokens[i] : tokens[i].Replace(literal, content, StringComparison.Ordinal))
                : regex!.Replace(tokens[i], content);
        }
    }
}

/// <summary>
/// SentencePiece byte-fallback tokens ("&lt;0x41&gt;") back to bytes: consecutive byte tokens are
/// joined and decoded together; bytes that are not valid UTF-8 become one U+FFFD each.
/// </summary>
public sealed class ByteFallbackDecoder : TokenDecoder
{
    public override void Decode(List<string> tokens)
    {
        var result = new List<string>(tokens.Count);
        var pending = new List<byte>();
        foreach (var token in tokens)
        {
            if (TryParseByteToken(token, out var b))
            {
                pending.Add(b);
                continue;
            }
            Flush();
            result.Add(token);
        }
        Flush();
        tokens.Clear();
        tokens.AddRange(result);

        void Flush()
        {
            if (pending.Count == 0)
                return;
            var bytes = pending.ToArray();
            pending.Clear();
            try
            {
                result.Add(new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes));
            }
            catch (DecoderFallbackException)
            {
                for (var i = 0; i < bytes.Length; i++)
                    result.Add("\uFFFD");
            }
        }
    }

    public static bool TryParseByteToken(string token, out byte value)
    {
        value = 0;
        return token.Length == 6 && token.StartsWith("<0x", StringComparison.Ordinal) && token[5] == '>'
            && byte.TryParse(token.AsSpan(3, 2), System.Globalization.NumberStyles.AllowHexSpecifier, null, out value);
    }
}

/// <summary>Joins all tokens into one.</summary>
public sealed class FuseDecoder : TokenDecoder
{
    public override void Decode(List<string> tokens)
    {
        var joined = string.Concat(tokens);
        tokens.Clear();
        tokens.Add(joined);
    }
}

/// <summary>Removes up to <c>start</c> leading and <c>stop</c> trailing copies of a character from every token.</summary>
public sealed class StripDecoder(char content, int start, int stop) : TokenDecoder
{
    public char Content => content;
    public int Start => start;

    public override void Decode(List<string> tokens)
    {
        for (var i = 0; i < tokens.Count; i++)
        {
            var token = tokens[i];
            var from = 0;
            while (from < token.Length && from < start && token[from] == content)
                from++;
            var to = token.Length;
            while (to > from && token.Length - to < stop && token[to - 1] == content)
                to--;
            tokens[i] = token[from..to];
        }
    }
}

/// <summary>SentencePiece's marker back to spaces; the first token loses its leading space unless the scheme never adds one.</summary>
public sealed class MetaspaceDecoder(char replacement, bool stripFirstSpace) : TokenDecoder
{
    public bool StripsFirstSpace => stripFirstSpace;
    public char Replacement => replacement;

    public override void Decode(List<string> tokens)
    {
        for (var i = 0; i < tokens.Count; i++)
        {
            var text = tokens[i].Replace(replacement, ' ');
            if (i == 0 && stripFirstSpace && text.StartsWith(' '))
                text = text[1..];
            tokens[i] = text;
        }
    }
}

public sealed class SequenceDecoder(IReadOnlyList<TokenDecoder> decoders) : TokenDecoder
{
    public IReadOnlyList<TokenDecoder> Steps => decoders;

    public override void Decode(List<string> tokens)
    {
        foreach (var decoder in decoders)
            decoder.Decode(tokens);
    }
}
