using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace InferenceServer.Benchmarks.TokenizerLibraries;

/// <summary>
/// Builds a Microsoft.ML.Tokenizers tokenizer from a Hugging Face tokenizer.json, as faithfully as
/// the library allows. The library reads no tokenizer.json itself: its BPE takes a vocabulary,
/// merges and options (<see cref="BpeOptions"/>), its pre-tokenizer one .NET regex, and it has no
/// NFC or Prepend/Replace normalizer and no byte fallback. What it lacks is filled in here with the
/// smallest code that keeps the file's meaning, and <see cref="Loaded.Notes"/> names every gap left.
/// </summary>
public static class MicrosoftMlLoader
{
    /// <summary>A built tokenizer, or null with the reason it cannot be built; notes name what it ignores.</summary>
    public sealed record Loaded(string Library, Microsoft.ML.Tokenizers.Tokenizer? Tokenizer, string Notes);

    /// <summary>
    /// The library's BPE for every file; for a SentencePiece-style file (byte fallback) also its
    /// SentencePiece tokenizer, fed a model that <see cref="SentencePieceModelWriter"/> writes from the file.
    /// </summary>
    public static IEnumerable<Loaded> LoadAll(string path)
    {
        var bpe = Load(path);
        yield return bpe with { Library = "Microsoft.ML.Tokenizers (BPE)" };
        using var document = JsonDocument.Parse(File.ReadAllBytes(path));
        if (Flag(document.RootElement.GetProperty("model"), "byte_fallback"))
            yield return SentencePieceModelWriter.Load(document.RootElement);
    }

    public static Loaded Load(string path)
    {
        using var document = JsonDocument.Parse(File.ReadAllBytes(path));
        var root = document.RootElement;
        var model = root.GetProperty("model");
        if (model.GetProperty("type").GetString() != "BPE")
            return new Loaded("", null, "not a BPE model");

        var notes = new List<string>();
        var vocabulary = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var entry in model.GetProperty("vocab").EnumerateObject())
            vocabulary[entry.Name] = entry.Value.GetInt32();
        var merges = new List<string>();
        foreach (var merge in model.GetProperty("merges").EnumerateArray())
            merges.Add(merge.ValueKind == JsonValueKind.Array ? $"{merge[0].GetString()} {merge[1].GetString()}" : merge.GetString()!);

        var special = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var added in root.GetProperty("added_tokens").EnumerateArray())
        {
            special[added.GetProperty("content").GetString()!] = added.GetProperty("id").GetInt32();
            vocabulary.TryAdd(added.GetProperty("content").GetString()!, added.GetProperty("id").GetInt32());
        }

        var options = new BpeOptions(vocabulary) { Merges = merges, SpecialTokens = special };
        if (Flag(model, "ignore_merges"))
            notes.Add("ignore_merges unsupported");
        if (Flag(model, "byte_fallback"))
            notes.Add("no byte fallback");
        if (model.TryGetProperty("unk_token", out var unk) && unk.ValueKind == JsonValueKind.String)
        {
            options.UnknownToken = unk.GetString();
            options.FuseUnknownTokens = Flag(model, "fuse_unk");
        }

        var byteLevel = false;
        var splits = new List<Regex>();
        if (root.TryGetProperty("pre_tokenizer", out var pre) && pre.ValueKind == JsonValueKind.Object)
        {
            foreach (var step in Steps(pre, "pretokenizers"))
            {
                switch (step.GetProperty("type").GetString())
                {
                    case "ByteLevel":
                        byteLevel = true;
                        if (Flag(step, "use_regex") || Flag(step, "add_prefix_space"))
                            return new Loaded("", null, "ByteLevel pre-tokenizer with its own regex or prefix space");
                        break;
                    case "Split" when step.GetProperty("behavior").GetString() == "Isolated" && !Flag(step, "invert")
                                      && step.GetProperty("pattern").TryGetProperty("Regex", out var pattern):
                        splits.Add(new Regex(pattern.GetString()!, RegexOptions.Compiled | RegexOptions.CultureInvariant));
                        break;
                    default:
                        return new Loaded("", null, $"pre-tokenizer {step.GetProperty("type").GetString()} unsupported");
                }
            }
        }
        options.ByteLevel = byteLevel;
        // One regex whose matches cover the text is the library's own RegexPreTokenizer; a chain of
        // Splits (keeping the text between matches) needs a pre-tokenizer of our own.
        options.PreTokenizer = splits.Count switch
        {
            // Without one the library splits on white space; Hugging Face keeps the text whole.
            0 => new WholeTextPreTokenizer(special),
            1 => new RegexPreTokenizer(splits[0], special),
            _ => new IsolatedSplitsPreTokenizer(splits, special),
        };
        if (splits.Count > 1)
            notes.Add("Split chain: own pre-tokenizer");

        if (root.TryGetProperty("normalizer", out var normalizer) && normalizer.ValueKind == JsonValueKind.Object)
        {
            var steps = Steps(normalizer, "normalizers").ToList();
            if (steps.Count == 1 && steps[0].GetProperty("type").GetString() == "NFC")
            {
                options.Normalizer = new FormCNormalizer();
                notes.Add("NFC: own normalizer");
            }
            else if (steps.Count == 2 && steps[0].GetProperty("type").GetString() == "Prepend" && steps[1].GetProperty("type").GetString() == "Replace")
            {
                options.Normalizer = new PrependReplaceNormalizer(steps[0].GetProperty("prepend").GetString()!,
                    steps[1].GetProperty("pattern").GetProperty("String").GetString()!, steps[1].GetProperty("content").GetString()!);
                notes.Add("Prepend/Replace: own normalizer, applied before added tokens are split out");
            }
            else if (steps.Count > 0)
            {
                return new Loaded("", null, "normalizer unsupported");
            }
        }

        return new Loaded("", BpeTokenizer.Create(options), string.Join("; ", notes));
    }

    /// <summary>encode(text, add_special_tokens=false) as the library gives it.</summary>
    public static IReadOnlyList<int> Encode(Microsoft.ML.Tokenizers.Tokenizer tokenizer, string text) =>
        tokenizer.EncodeToIds(text, considerPreTokenization: true, considerNormalization: true);

    internal static bool Flag(JsonElement element, string name) =>
        element.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.True;

    private static IEnumerable<JsonElement> Steps(JsonElement element, string listName) =>
        element.GetProperty("type").GetString() == "Sequence" ? element.GetProperty(listName).EnumerateArray() : [element];

    /// <summary>The text as one piece, with the added tokens cut out.</summary>
    private sealed class WholeTextPreTokenizer(IReadOnlyDictionary<string, int> special) : PreTokenizer
    {
        private readonly IsolatedSplitsPreTokenizer _cutter = new([], special);

        public override IEnumerable<(int Offset, int Length)> PreTokenize(string text) => _cutter.PreTokenize(text);

        public override IEnumerable<(int Offset, int Length)> PreTokenize(ReadOnlySpan<char> text) => _cutter.PreTokenize(text);
    }

    private sealed class FormCNormalizer : Normalizer
    {
        public override string Normalize(string original) => original.Normalize(NormalizationForm.FormC);

        public override string Normalize(ReadOnlySpan<char> original) => Normalize(original.ToString());
    }

    private sealed class PrependReplaceNormalizer(string prepend, string pattern, string content) : Normalizer
    {
        public override string Normalize(string original) =>
            original.Length == 0 ? original : (prepend + original).Replace(pattern, content, StringComparison.Ordinal);

        public override string Normalize(ReadOnlySpan<char> original) => Normalize(original.ToString());
    }

    /// <summary>
    /// Hugging Face's Split(behavior: Isolated) applied in turn: each regex cuts every piece into its
    /// matches and the text between them; added tokens are cut out first and kept whole.
    /// </summary>
    private sealed class IsolatedSplitsPreTokenizer(IReadOnlyList<Regex> splits, IReadOnlyDictionary<string, int> special) : PreTokenizer
    {
        private readonly Regex _special = new(string.Join('|', special.Keys.OrderByDescending(k => k.Length).Select(Regex.Escape)), RegexOptions.Compiled);

        public override IEnumerable<(int Offset, int Length)> PreTokenize(string text) => Cut(text);

        public override IEnumerable<(int Offset, int Length)> PreTokenize(ReadOnlySpan<char> text) => Cut(text.ToString());

        private List<(int Offset, int Length)> Cut(string text)
        {
            var pieces = new List<(int Offset, int Length)>();
            var last = 0;
            foreach (Match match in _special.Matches(text))
            {
                Split(text, last, match.Index - last, 0, pieces);
                pieces.Add((match.Index, match.Length));
                last = match.Index + match.Length;
            }
            Split(text, last, text.Length - last, 0, pieces);
            return pieces;
        }

        private void Split(string text, int offset, int length, int level, List<(int Offset, int Length)> pieces)
        {
            if (length == 0)
                return;
            if (level == splits.Count)
            {
                pieces.Add((offset, length));
                return;
            }
            var last = offset;
            for (var match = splits[level].Match(text, offset, length); match.Success; match = match.NextMatch())
            {
                if (match.Length == 0)
                    continue;
                Split(text, last, match.Index - last, level + 1, pieces);
                Split(text, match.Index, match.Length, level + 1, pieces);
                last = match.Index + match.Length;
            }
            Split(text, last, offset + length - last, level + 1, pieces);
        }
    }
}
