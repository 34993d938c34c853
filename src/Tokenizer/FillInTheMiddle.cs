namespace InferenceServer.Tokenizer;

/// <summary>The order of the parts in a fill-in-the-middle prompt; a model only knows the orders it was trained with.</summary>
public enum FimOrder
{
    /// <summary>Prefix, suffix, middle: what every FIM-trained model knows.</summary>
    PrefixSuffixMiddle,

    /// <summary>
    /// Suffix, then prefix, then middle (StarCoder's variant: both markers first). As a person types,
    /// only the end of the prompt changes, so nearly all of it is served from the prefix cache.
    /// </summary>
    SuffixPrefixMiddle,
}

/// <summary>
/// A fill-in-the-middle prompt format, recognized from the special tokens a tokenizer has.
/// Prompts are built as token ids, with the user's prefix and suffix encoded without
/// special-token parsing, so code that happens to contain a marker's text cannot inject a
/// control token.
/// </summary>
public sealed record FimTemplate(string Family, int PrefixId, int SuffixId, int MiddleId, IReadOnlyList<int> StopIds, bool AddsBos)
{
    /// <summary>The order prompts are built in (prefix-suffix-middle unless the model says otherwise).</summary>
    public FimOrder Order { get; init; } = FimOrder.PrefixSuffixMiddle;

    private static readonly (string Family, string Prefix, string Suffix, string Middle, string[] Stops, bool Bos)[] Families =
    [
        ("starcoder", "<fim_prefix>", "<fim_suffix>", "<fim_middle>", ["<|endoftext|>", "<fim_pad>", "<file_sep>"], false),
        ("qwen2.5-coder", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", ["<|endoftext|>", "<|fim_pad|>", "<|file_sep|>", "<|repo_name|>", "<|im_end|>"], false),
        ("deepseek-coder", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>", ["<｜end▁of▁sentence｜>", "<|EOT|>"], true),
        ("codellama", "▁<PRE>", "▁<SUF>", "▁<MID>", ["▁<EOT>", "</s>"], true),
    ];

    /// <summary>The format for a tokenizer, or null when it has none of the known marker sets.</summary>
    public static FimTemplate? Detect(Tokenizer tokenizer)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        foreach (var f in Families)
        {
            if (tokenizer.TryGetId(f.Prefix, out var prefix) && tokenizer.TryGetId(f.Suffix, out var suffix) && tokenizer.TryGetId(f.Middle, out var middle))
            {
                var stops = f.Stops.Select(s => tokenizer.TryGetId(s, out var id) ? id : -1).Where(id => id >= 0).ToArray();
                return new FimTemplate(f.Family, prefix, suffix, middle, stops, f.Bos);
            }
        }
        return null;
    }

    /// <summary>
    /// [BOS] PREFIX-MARKER prefix SUFFIX-MARKER suffix MIDDLE-MARKER, or in suffix-prefix-middle
    /// order [BOS] PREFIX-MARKER SUFFIX-MARKER suffix MIDDLE-MARKER prefix: either way the model
    /// continues with the middle. BOS comes from the tokenizer's post-processor, for the families
    /// trained with it.
    /// </summary>
    public int[] Build(Tokenizer tokenizer, string prefix, string suffix)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(prefix);
        ArgumentNullException.ThrowIfNull(suffix);
        var ids = new List<int>(prefix.Length / 3 + suffix.Length / 3 + 8);
        if (AddsBos)
            ids.AddRange(tokenizer.LeadingSpecialIds);
        ids.Add(PrefixId);
        if (Order == FimOrder.SuffixPrefixMiddle)
        {
            ids.Add(SuffixId);
            tokenizer.Encode(suffix, ids, parseSpecialTokens: false);
            ids.Add(MiddleId);
            tokenizer.Encode(prefix, ids, parseSpecialTokens: false);
            return [.. ids];
        }
        tokenizer.Encode(prefix, ids, parseSpecialTokens: false);
        ids.Add(SuffixId);
        tokenizer.Encode(suffix, ids, parseSpecialTokens: false);
        ids.Add(MiddleId);
        return [.. ids];
    }

    /// <summary>
    /// The same prompt from a prefix and suffix already encoded (without special-token parsing),
    /// for a caller that trims them to fit a context.
    /// </summary>
    public int[] Build(Tokenizer tokenizer, ReadOnlySpan<int> prefix, ReadOnlySpan<int> suffix)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        var ids = new List<int>(prefix.Length + suffix.Length + 8);
        if (AddsBos)
            ids.AddRange(tokenizer.LeadingSpecialIds);
        ids.Add(PrefixId);
        if (Order == FimOrder.SuffixPrefixMiddle)
        {
            ids.Add(SuffixId);
            ids.AddRange(suffix);
            ids.Add(MiddleId);
            ids.AddRange(prefix);
            return [.. ids];
        }
        ids.AddRange(prefix);
        ids.Add(SuffixId);
        ids.AddRange(suffix);
        ids.Add(MiddleId);
        return [.. ids];
    }
}
