using System.Globalization;

namespace InferenceServer.LoadGenerator.Scenarios;

/// <summary>
/// Plain prompts of a fixed length cut from real source text: each request key gets its own
/// slice (from a line start in a file the key picks) behind a first line naming the file and a
/// number drawn for the key, so no two prompts share even their first KV block (code lines often
/// begin alike) and the prefix cache does not flatter the figures. With a tokenizer the slice is cut to the requested
/// number of tokens (the server's count may differ by a token at the cut, and by the BOS token it
/// adds); without one, at <see cref="CharsPerTokenEstimate"/> characters per token.
/// </summary>
public sealed class PromptSource
{
    public const int CharsPerTokenEstimate = 4;

    private readonly SourceLibrary _library;
    private readonly Tokenizer.Tokenizer? _tokenizer;
    private readonly int _seed;
    private readonly int _contentTokens;

    public PromptSource(SourceLibrary library, Tokenizer.Tokenizer? tokenizer, int promptTokens, int seed)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(promptTokens);
        _library = library ?? throw new ArgumentNullException(nameof(library));
        _tokenizer = tokenizer;
        PromptTokens = promptTokens;
        _seed = seed;
        // The server adds the tokenizer's leading special tokens (BOS) itself.
        _contentTokens = Math.Max(1, promptTokens - (tokenizer?.LeadingSpecialIds.Count ?? 0));
    }

    public int PromptTokens { get; }
    public bool Exact => _tokenizer is not null;

    public string Prompt(long key)
    {
        var random = new Random(Seeds.Derive(_seed, 0x50524F4D, key));
        var window = _contentTokens * CharsPerTokenEstimate * 2;
        var document = _library.DocumentNear(random.Next(_library.Count), window);
        var text = document.Text;
        var start = LineStartAtOrBefore(text, random.Next(Math.Max(1, text.Length - window)));
        var header = string.Create(CultureInfo.InvariantCulture, $"# {random.Next():x8} {document.Path}\n");
        if (_tokenizer is null)
            return header + Slice(text, start, Math.Max(0, _contentTokens * CharsPerTokenEstimate - header.Length));
        // Grow the window until it holds enough tokens (or the file ends), then keep exactly those.
        var ids = new List<int>(_contentTokens * 2);
        while (true)
        {
            ids.Clear();
            var slice = header + Slice(text, start, window);
            _tokenizer.Encode(slice, ids, addSpecialTokens: false, parseSpecialTokens: false);
            if (ids.Count >= _contentTokens || start + window >= text.Length)
                break;
            window *= 2;
        }
        var count = Math.Min(ids.Count, _contentTokens);
        return _tokenizer.Decode(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(ids)[..count], skipSpecialTokens: true).TrimEnd('\uFFFD');
    }

    private static string Slice(string text, int start, int length) => text.Substring(start, Math.Min(length, text.Length - start));

    private static int LineStartAtOrBefore(string text, int position)
    {
        if (position <= 0)
            return 0;
        var newline = text.LastIndexOf('\n', Math.Min(position, text.Length) - 1);
        return newline + 1;
    }
}
