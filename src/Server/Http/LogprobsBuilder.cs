using System.Globalization;
using System.Text;
using InferenceServer.Engine;
using InferenceServer.Tokenizer;
using InferenceServer.Tokenizer.Model;
using TextTokenizer = InferenceServer.Tokenizer.Tokenizer;

namespace InferenceServer.Server.Http;

/// <summary>
/// OpenAI's legacy logprobs object for generated tokens, built incrementally (a stream's chunks
/// continue the text offsets of the previous ones). Each token is shown as its own decoded text;
/// a byte-level token that is not valid UTF-8 on its own is shown as "bytes:\xNN..." as OpenAI does.
/// text_offset is where the token's text starts in the completion's text, in UTF-16 characters from
/// its start (the prompt is never echoed): the length of the text the tokens before it decode to,
/// as the engine's own streaming detokenizer releases it.
/// </summary>
internal sealed class LogprobsBuilder(TextTokenizer tokenizer, int top)
{
    private readonly StreamingDetokenizer _text = tokenizer.CreateStreamingDetokenizer(skipSpecialTokens: true);

    /// <summary>OpenAI's bound on the legacy logprobs parameter.</summary>
    public const int MaxLogprobs = 5;

    // JSON has no infinities; vLLM uses the same stand-in for an impossible token.
    private const float Impossible = -9999f;

    private int _offset;

    public CompletionLogprobs Build(IReadOnlyList<TokenLogprobs> items)
    {
        var tokens = new List<string>(items.Count);
        var logprobs = new List<float>(items.Count);
        var tops = new List<Dictionary<string, float>>(items.Count);
        var offsets = new List<int>(items.Count);
        foreach (var item in items)
        {
            var text = TokenText(item.TokenId);
            tokens.Add(text);
            logprobs.Add(Finite(item.Logprob));
            offsets.Add(_offset);
            _offset += _text.Add(item.TokenId).Length;
            // The top alternatives, and always the chosen token (so up to top + 1 entries, as OpenAI says).
            var alternatives = new Dictionary<string, float>(top + 1, StringComparer.Ordinal);
            for (var i = 0; i < item.TopAlternatives.Count && i < top; i++)
                alternatives.TryAdd(TokenText(item.TopAlternatives[i].Id), Finite(item.TopAlternatives[i].Logprob));
            alternatives.TryAdd(text, Finite(item.Logprob));
            tops.Add(alternatives);
        }
        return new CompletionLogprobs { Tokens = tokens, TokenLogprobs = logprobs, TopLogprobs = tops, TextOffset = offsets };
    }

    private static float Finite(float logprob) => float.IsFinite(logprob) ? logprob : Impossible;

    private string TokenText(int id)
    {
        var text = tokenizer.Decode([id]);
        if (!text.Contains('\uFFFD', StringComparison.Ordinal) || !tokenizer.IsByteLevel || tokenizer.IdToToken(id) is not { } raw)
            return text;
        var bytes = new StringBuilder("bytes:");
        foreach (var c in raw)
        {
            if (!ByteLevelAlphabet.TryCharToByte(c, out var b))
                return text;
            bytes.Append(CultureInfo.InvariantCulture, $"\\x{b:x2}");
        }
        return bytes.ToString();
    }
}
