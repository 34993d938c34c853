using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using InferenceServer.Tokenizer.Decoding;
using InferenceServer.Tokenizer.Model;
using InferenceServer.Tokenizer.Normalization;
using InferenceServer.Tokenizer.PreTokenization;

namespace InferenceServer.Tokenizer;

/// <summary>
/// Reads Hugging Face's tokenizer.json. Every component type we do not implement is refused by
/// name at load time, so a tokenizer either loads and is exact or does not load.
/// </summary>
internal static class TokenizerJson
{
    public static Tokenizer Load(string path)
    {
        var file = Directory.Exists(path) ? Path.Combine(path, "tokenizer.json") : path;
        if (!File.Exists(file))
            throw new TokenizerLoadException($"{file}: not found");
        using var stream = File.OpenRead(file);
        return Parse(stream, file);
    }

    public static Tokenizer Parse(Stream json, string source)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(json, new JsonDocumentOptions { MaxDepth = 256 });
        }
        catch (JsonException e)
        {
            throw new TokenizerLoadException($"{source}: not valid JSON ({e.Message})", e);
        }
        using (doc)
        {
            try
            {
                return Build(doc.RootElement, source);
            }
            catch (Exception e) when (e is InvalidOperationException or KeyNotFoundException or FormatException or ArgumentException)
            {
                throw new TokenizerLoadException($"{source}: malformed tokenizer.json ({e.Message})", e);
            }
        }
    }

    private static Tokenizer Build(JsonElement root, string source)
    {
        if (root.ValueKind != JsonValueKind.Object)
            throw new TokenizerLoadException($"{source}: the document is not a JSON object");
        if (!root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
            throw new TokenizerLoadException($"{source}: no \"model\" section");

        var normalizer = Optional(root, "normalizer") is { } n ? ReadNormalizer(n, source) : null;
        var preTokenizer = Optional(root, "pre_tokenizer") is { } p ? ReadPreTokenizer(p, source) : null;
        var decoder = Optional(root, "decoder") is { } d ? ReadDecoder(d, source) : null;
        var bpe = ReadModel(model, preTokenizer?.IsByteLevel ?? false, source);
        var added = ReadAddedTokens(root, source);
        var (prefix, suffix) = Optional(root, "post_processor") is { } post ? ReadPostProcessor(post, source) : ([], []);
        return new Tokenizer(bpe, added, normalizer, preTokenizer, decoder, prefix, suffix);
    }

    private static JsonElement? Optional(JsonElement element, string name) =>
        element.TryGetProperty(name, out var value) && value.ValueKind != JsonValueKind.Null ? value : null;

    private static string TypeOf(JsonElement element, string what, string source) =>
        element.TryGetProperty("type", out var type) && type.GetString() is { } name
            ? name
            : throw new TokenizerLoadException($"{source}: a {what} without a \"type\"");

    private static string String(JsonElement element, string name, string fallback) =>
        element.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.String ? value.GetString()! : fallback;

    private static bool Bool(JsonElement element, string name, bool fallback) =>
        element.TryGetProperty(name, out var value) && value.ValueKind is JsonValueKind.True or JsonValueKind.False ? value.GetBoolean() : fallback;

    private static char Char(JsonElement element, string name, char fallback)
    {
        var text = String(element, name, fallback.ToString());
        return text.Length == 1 ? text[0] : throw new FormatException($"'{name}' must be one character, got '{text}'");
    }

    private static Normalizer ReadNormalizer(JsonElement element, string source) => TypeOf(element, "normalizer", source) switch
    {
        "NFC" => new UnicodeNormalizer(NormalizationForm.FormC),
        "NFD" => new UnicodeNormalizer(NormalizationForm.FormD),
        "NFKC" => new UnicodeNormalizer(NormalizationForm.FormKC),
        "NFKD" => new UnicodeNormalizer(NormalizationForm.FormKD),
        "Lowercase" => new LowercaseNormalizer(),
        "Prepend" => new PrependNormalizer(String(element, "prepend", "")),
        "Replace" => ReadReplace(element, (literal, regex, content) => new ReplaceNormalizer(literal, regex, content)),
        "Strip" => new StripNormalizer(Bool(element, "strip_left", true), Bool(element, "strip_right", true)),
        "Sequence" => new SequenceNormalizer(element.GetProperty("normalizers").EnumerateArray().Select(e => ReadNormalizer(e, source)).ToArray()),
        var other => throw new TokenizerLoadException($"{source}: normalizer type '{other}' is not supported (NFC, NFD, NFKC, NFKD, Lowercase, Prepend, Replace, Strip, Sequence)"),
    };

    private static T ReadReplace<T>(JsonElement element, Func<string?, Regex?, string, T> create)
    {
        var pattern = element.GetProperty("pattern");
        var content = String(element, "content", "");
        if (pattern.TryGetProperty("String", out var literal))
            return create(literal.GetString() ?? "", null, content);
        if (pattern.TryGetProperty("Regex", out var regex))
            return create(null, new Regex(regex.GetString() ?? "", RegexOptions.CultureInvariant), content);
        throw new FormatException("a pattern must be {\"String\": ...} or {\"Regex\": ...}");
    }

    private static PreTokenizer ReadPreTokenizer(JsonElement element, string source)
    {
        switch (TypeOf(element, "pre_tokenizer", source))
        {
            case "Sequence":
                return new SequencePreTokenizer(element.GetProperty("pretokenizers").EnumerateArray().Select(e => ReadPreTokenizer(e, source)).ToArray());
            case "ByteLevel":
                return new ByteLevelPreTokenizer(Bool(element, "add_prefix_space", true), Bool(element, "use_regex", true));
            case "Split":
                var pattern = element.GetProperty("pattern");
                var matcher = pattern.TryGetProperty("Regex", out var regex)
                    ? PatternMatcher.ForRegex(regex.GetString() ?? "")
                    : PatternMatcher.ForLiteral(pattern.GetProperty("String").GetString() ?? "");
                var behavior = String(element, "behavior", "Isolated") switch
                {
                    "Removed" => SplitBehavior.Removed,
                    "Isolated" => SplitBehavior.Isolated,
                    "MergedWithPrevious" => SplitBehavior.MergedWithPrevious,
                    "MergedWithNext" => SplitBehavior.MergedWithNext,
                    "Contiguous" => SplitBehavior.Contiguous,
                    var other => throw new TokenizerLoadException($"{source}: split behavior '{other}' is unknown"),
                };
                return new SplitPreTokenizer(matcher, behavior, Bool(element, "invert", false));
            case "Digits":
                return new DigitsPreTokenizer(Bool(element, "individual_digits", false));
            case "Metaspace":
                return new MetaspacePreTokenizer(Char(element, "replacement", '▁'), ReadPrependScheme(element), Bool(element, "split", true));
            case var other:
                throw new TokenizerLoadException($"{source}: pre_tokenizer type '{other}' is not supported (ByteLevel, Split, Digits, Metaspace, Sequence)");
        }
    }

    // Newer files say prepend_scheme; older ones add_prefix_space.
    private static PrependScheme ReadPrependScheme(JsonElement element) => String(element, "prepend_scheme", "") switch
    {
        "always" => PrependScheme.Always,
        "first" => PrependScheme.First,
        "never" => PrependScheme.Never,
        _ => Bool(element, "add_prefix_space", true) ? PrependScheme.Always : PrependScheme.Never,
    };

    private static BpeModel ReadModel(JsonElement model, bool byteLevel, string source)
    {
        var type = model.TryGetProperty("type", out var t) ? t.GetString() : "BPE";
        if (type != "BPE")
            throw new TokenizerLoadException($"{source}: model type '{type}' is not supported (BPE)");
        foreach (var affix in new[] { "continuing_subword_prefix", "end_of_word_suffix" })
        {
            if (String(model, affix, "") is { Length: > 0 } value)
                throw new TokenizerLoadException($"{source}: BPE with {affix} '{value}' is not supported");
        }
        if (!model.TryGetProperty("vocab", out var vocabElement) || vocabElement.ValueKind != JsonValueKind.Object)
            throw new TokenizerLoadException($"{source}: the BPE model has no vocab");
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var entry in vocabElement.EnumerateObject())
        {
            var id = entry.Value.GetInt32();
            if (id < 0)
                throw new TokenizerLoadException($"{source}: token '{entry.Name}' has a negative id");
            vocab[entry.Name] = id;
        }

        var merges = new List<(string, string)>();
        if (model.TryGetProperty("merges", out var mergesElement))
        {
            foreach (var merge in mergesElement.EnumerateArray())
            {
                if (merge.ValueKind == JsonValueKind.Array && merge.GetArrayLength() == 2)
                {
                    merges.Add((merge[0].GetString()!, merge[1].GetString()!));
                }
                else if (merge.ValueKind == JsonValueKind.String && merge.GetString()!.Split(' ') is [var left, var right])
                {
                    merges.Add((left, right));
                }
                else
                {
                    throw new TokenizerLoadException($"{source}: merge {merges.Count} is neither \"a b\" nor [\"a\", \"b\"]: {merge.GetRawText()}");
                }
            }
        }
        return new BpeModel(vocab, merges, new BpeOptions
        {
            ByteLevel = byteLevel,
            ByteFallback = Bool(model, "byte_fallback", false),
            FuseUnknown = Bool(model, "fuse_unk", false),
            IgnoreMerges = Bool(model, "ignore_merges", false),
            UnknownToken = model.TryGetProperty("unk_token", out var unk) && unk.ValueKind == JsonValueKind.String ? unk.GetString() : null,
        });
    }

    private static List<AddedToken> ReadAddedTokens(JsonElement root, string source)
    {
        var tokens = new List<AddedToken>();
        if (Optional(root, "added_tokens") is not { } array)
            return tokens;
        foreach (var token in array.EnumerateArray())
        {
            tokens.Add(new AddedToken(
                token.GetProperty("id").GetInt32(),
                token.GetProperty("content").GetString() ?? throw new TokenizerLoadException($"{source}: an added token without content"),
                Bool(token, "special", false),
                Bool(token, "lstrip", false),
                Bool(token, "rstrip", false),
                Bool(token, "normalized", true),
                Bool(token, "single_word", false)));
        }
        return tokens;
    }

    private static TokenDecoder ReadDecoder(JsonElement element, string source) => TypeOf(element, "decoder", source) switch
    {
        "ByteLevel" => new ByteLevelDecoder(),
        "Replace" => ReadReplace<TokenDecoder>(element, (literal, regex, content) => new ReplaceDecoder(literal, regex, content)),
        "ByteFallback" => new ByteFallbackDecoder(),
        "Fuse" => new FuseDecoder(),
        "Strip" => new StripDecoder(Char(element, "content", ' '), element.GetProperty("start").GetInt32(), element.GetProperty("stop").GetInt32()),
        "Metaspace" => new MetaspaceDecoder(Char(element, "replacement", '▁'), ReadPrependScheme(element) != PrependScheme.Never),
        "Sequence" => new SequenceDecoder(element.GetProperty("decoders").EnumerateArray().Select(e => ReadDecoder(e, source)).ToArray()),
        var other => throw new TokenizerLoadException($"{source}: decoder type '{other}' is not supported (ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence)"),
    };

    /// <summary>The ids a post-processor puts before and after a single sequence.</summary>
    private static (int[] Prefix, int[] Suffix) ReadPostProcessor(JsonElement element, string source)
    {
        switch (TypeOf(element, "post_processor", source))
        {
            case "ByteLevel":
                return ([], []); // only adjusts offsets
            case "TemplateProcessing":
                var specials = new Dictionary<string, int[]>(StringComparer.Ordinal);
                if (element.TryGetProperty("special_tokens", out var specialTokens))
                {
                    foreach (var entry in specialTokens.EnumerateObject())
                        specials[entry.Name] = entry.Value.GetProperty("ids").EnumerateArray().Select(i => i.GetInt32()).ToArray();
                }
                List<int> prefix = [], suffix = [];
                var seenSequence = false;
                foreach (var item in element.GetProperty("single").EnumerateArray())
                {
                    if (item.TryGetProperty("Sequence", out _))
                    {
                        seenSequence = true;
                    }
                    else if (item.TryGetProperty("SpecialToken", out var special))
                    {
                        var name = special.GetProperty("id").GetString() ?? "";
                        if (!specials.TryGetValue(name, out var ids))
                            throw new TokenizerLoadException($"{source}: the template names special token '{name}', which special_tokens does not define");
                        (seenSequence ? suffix : prefix).AddRange(ids);
                    }
                }
                return ([.. prefix], [.. suffix]);
            case "BertProcessing" or "RobertaProcessing":
                return ([element.GetProperty("cls")[1].GetInt32()], [element.GetProperty("sep")[1].GetInt32()]);
            case "Sequence":
                List<int> before = [], after = [];
                foreach (var step in element.GetProperty("processors").EnumerateArray())
                {
                    var (p, s) = ReadPostProcessor(step, source);
                    before.AddRange(p);
                    after.InsertRange(0, s);
                }
                return ([.. before], [.. after]);
            case var other:
                throw new TokenizerLoadException($"{source}: post_processor type '{other}' is not supported (ByteLevel, TemplateProcessing, BertProcessing, RobertaProcessing, Sequence)");
        }
    }
}
