using System.Text;
using InferenceServer.Tokenizer.Decoding;
using InferenceServer.Tokenizer.Model;
using InferenceServer.Tokenizer.Normalization;
using InferenceServer.Tokenizer.PreTokenization;

namespace InferenceServer.Tokenizer;

/// <summary>
/// A Hugging Face tokenizer.json with a BPE model: added tokens, normalizer, pre-tokenizer, BPE,
/// post-processor on the way in; decoder on the way out. Thread-safe: encoding keeps its working
/// lists per thread.
/// </summary>
public sealed class Tokenizer
{
    private readonly AddedVocabulary _added;
    private readonly Normalizer? _normalizer;
    private readonly PreTokenizer? _preTokenizer;
    private readonly BpeModel _model;
    private readonly TokenDecoder? _decoder;
    private readonly int[] _prefixIds;
    private readonly int[] _suffixIds;
    private readonly string?[] _addedById;
    private readonly bool[] _specialById;
    private readonly Dictionary<string, int> _addedByContent;

    [ThreadStatic] private static Scratch? t_scratch;

    internal Tokenizer(BpeModel model, IReadOnlyList<AddedToken> added, Normalizer? normalizer, PreTokenizer? preTokenizer,
        TokenDecoder? decoder, int[] prefixIds, int[] suffixIds)
    {
        _model = model;
        _normalizer = normalizer;
        _preTokenizer = preTokenizer;
        _decoder = decoder;
        _prefixIds = prefixIds;
        _suffixIds = suffixIds;
        _added = new AddedVocabulary(added, normalizer);
        VocabSize = Math.Max(model.VocabSize, added.Count == 0 ? 0 : added.Max(t => t.Id) + 1);
        _addedById = new string?[VocabSize];
        _specialById = new bool[VocabSize];
        _addedByContent = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var token in added)
        {
            _addedById[token.Id] = token.Content;
            _specialById[token.Id] = token.Special;
            _addedByContent.TryAdd(token.Content, token.Id);
        }
    }

    /// <summary>Loads tokenizer.json, or the tokenizer.json inside a folder.</summary>
    public static Tokenizer Load(string path) => TokenizerJson.Load(path);

    /// <summary>Reads tokenizer.json from a stream; <paramref name="sourceName"/> names it in errors.</summary>
    public static Tokenizer Load(Stream json, string sourceName) => TokenizerJson.Parse(json, sourceName);

    /// <summary>Ids run from 0 to VocabSize - 1 (the model's tokens and the added ones).</summary>
    public int VocabSize { get; }

    public bool IsByteLevel => _model.ByteLevel;

    public IReadOnlyList<AddedToken> AddedTokens => _added.Tokens;

    internal TokenDecoder? Decoder => _decoder;

    private TokenTextTable? _tokenText;

    /// <summary>What each id contributes to decoded text, as bytes; built on first use.</summary>
    internal TokenTextTable TokenText => _tokenText ??= TokenTextTable.Build(this);

    private TokenHealing? _healing;
    private bool _healingBuilt;

    /// <summary>Token healing for this vocabulary (built on first use), or null where its tokens' text depends on their neighbours.</summary>
    public TokenHealing? Healing
    {
        get
        {
            if (!Volatile.Read(ref _healingBuilt))
            {
                _healing = TokenHealing.Build(this);
                Volatile.Write(ref _healingBuilt, true);
            }
            return _healing;
        }
    }

    /// <summary>What the post-processor puts in front of a sequence (BOS for the families that use one).</summary>
    public IReadOnlyList<int> LeadingSpecialIds => _prefixIds;

    public bool IsSpecial(int id) => (uint)id < (uint)_specialById.Length && _specialById[id];

    /// <summary>The token's string in the vocabulary (byte-level tokens in the byte alphabet), or null for an unknown id.</summary>
    public string? IdToToken(int id) =>
        (uint)id < (uint)_addedById.Length && _addedById[id] is { } added ? added : _model.IdToToken(id);

    public bool TryGetId(string token, out int id) => _addedByContent.TryGetValue(token, out id) || _model.TryGetId(token, out id);

    /// <summary>Token ids for <paramref name="text"/>.</summary>
    /// <param name="addSpecialTokens">Apply the post-processor (e.g. a BOS token in front).</param>
    /// <param name="parseSpecialTokens">
    /// Recognize added tokens written in the text, as the reference does. Off for text from
    /// users that must never turn into control tokens (a fill-in-the-middle prefix, say): then
    /// no added token is matched, special or not (some families mark their control tokens, such
    /// as Qwen's FIM markers, as non-special).
    /// </param>
    public int[] Encode(string text, bool addSpecialTokens = false, bool parseSpecialTokens = true)
    {
        var ids = new List<int>(text.Length / 3 + 4);
        Encode(text, ids, addSpecialTokens, parseSpecialTokens);
        return [.. ids];
    }

    /// <summary>Appends the ids of <paramref name="text"/> to <paramref name="output"/>.</summary>
    public void Encode(string text, List<int> output, bool addSpecialTokens = false, bool parseSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        ArgumentNullException.ThrowIfNull(output);
        text = ReplaceLoneSurrogates(text);
        var scratch = t_scratch ??= new Scratch();
        var start = output.Count;

        // Added tokens first: raw-text ones, then the normalized ones inside the normalized rest.
        var segments = scratch.Segments;
        segments.Clear();
        if (parseSpecialTokens)
            _added.Split(text, 0, text.Length, normalizedPass: false, segments, atTextStart: true);
        else
            segments.Add(Segment.OfText(text, 0, text.Length, atTextStart: true));
        foreach (var segment in segments)
        {
            if (segment.IsToken)
            {
                output.Add(segment.TokenId);
                continue;
            }
            var normalized = segment;
            if (_normalizer is not null)
            {
                var normalizedText = _normalizer.Normalize(segment.Text!.Substring(segment.Start, segment.Length));
                normalized = Segment.OfText(normalizedText, 0, normalizedText.Length, segment.AtTextStart);
            }
            if (parseSpecialTokens && _added.HasNormalizedTokens)
            {
                var inner = scratch.InnerSegments;
                inner.Clear();
                _added.Split(normalized.Text!, normalized.Start, normalized.Start + normalized.Length, normalizedPass: true, inner, normalized.AtTextStart);
                foreach (var part in inner)
                {
                    if (part.IsToken)
                        output.Add(part.TokenId);
                    else
                        EncodeText(part, output, scratch);
                }
            }
            else
            {
                EncodeText(normalized, output, scratch);
            }
        }

        if (addSpecialTokens)
        {
            output.InsertRange(start, _prefixIds);
            output.AddRange(_suffixIds);
        }
    }

    private void EncodeText(Segment segment, List<int> output, Scratch scratch)
    {
        if (segment.Length == 0)
            return;
        var pieces = scratch.Pieces;
        pieces.Clear();
        pieces.Add(new Piece(segment.Text!, segment.Start, segment.Length) { AtTextStart = segment.AtTextStart });
        _preTokenizer?.Split(pieces, scratch.PieceScratch);
        foreach (var piece in pieces)
            _model.Encode(piece.Span, output);
    }

    /// <summary>
    /// Lone surrogates cannot be encoded as UTF-8; like the reference's bindings, they are read as U+FFFD.
    /// </summary>
    private static string ReplaceLoneSurrogates(string text)
    {
        var span = text.AsSpan();
        var first = span.IndexOfAnyInRange('\uD800', '\uDFFF');
        if (first < 0 || Utf16Valid(span[first..]))
            return text;
        var builder = new StringBuilder(text.Length);
        foreach (var rune in EnumerateRunesLossy(text))
            builder.Append(rune);
        return builder.ToString();

        static bool Utf16Valid(ReadOnlySpan<char> s)
        {
            for (var i = 0; i < s.Length; i++)
            {
                if (char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]))
                    i++;
                else if (char.IsSurrogate(s[i]))
                    return false;
            }
            return true;
        }

        static IEnumerable<string> EnumerateRunesLossy(string s)
        {
            for (var i = 0; i < s.Length; i++)
            {
                if (char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]))
                {
                    yield return s.Substring(i, 2);
                    i++;
                }
                else
                {
                    yield return char.IsSurrogate(s[i]) ? "\uFFFD" : s[i].ToString();
                }
            }
        }
    }

    /// <summary>
    /// Text for token ids. Ids outside the vocabulary decode to nothing (as in the reference);
    /// with <paramref name="skipSpecialTokens"/>, special added tokens do too.
    /// </summary>
    public string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens = false)
    {
        var tokens = new List<string>(ids.Length);
        foreach (var id in ids)
        {
            if (skipSpecialTokens && IsSpecial(id))
                continue;
            if (IdToToken(id) is { } token)
                tokens.Add(token);
        }
        if (_decoder is null)
            return string.Join(' ', tokens);
        _decoder.Decode(tokens);
        return string.Concat(tokens);
    }

    /// <summary>A detokenizer for one sequence's stream of ids.</summary>
    public StreamingDetokenizer CreateStreamingDetokenizer(bool skipSpecialTokens = false) => new(this, skipSpecialTokens);

    private sealed class Scratch
    {
        public readonly List<Segment> Segments = [];
        public readonly List<Segment> InnerSegments = [];
        public readonly List<Piece> Pieces = [];
        public readonly List<Piece> PieceScratch = [];
    }
}
