using System.Text.Json;

namespace InferenceServer.ModelBuilder.Gguf;

/// <summary>
/// A byte-level BPE tokenizer.json as llama.cpp's "gpt2" tokenizer model stores it in GGUF
/// metadata: every token by id, a type per token, the merges, and the name of the
/// pre-tokenizer (llama.cpp implements a fixed set of split patterns and picks one by that name).
/// </summary>
public sealed record GgufVocabulary(string[] Tokens, int[] TokenTypes, string[] Merges, string PreTokenizer, bool AddBos)
{
    // llama.cpp's token types.
    public const int Normal = 1;
    public const int Control = 3;
    public const int UserDefined = 4;
    public const int Unused = 5;

    // Split patterns of the pre-tokenizers llama.cpp knows, by the name it knows them by.
    private static readonly (string Pattern, string Name)[] KnownSplits =
    [
        ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+", "llama-bpe"),
    ];

    /// <summary>Reads tokenizer.json (and tokenizer_config.json for add_bos_token) from a folder, padded to <paramref name="vocabSize"/> ids.</summary>
    public static GgufVocabulary Load(string tokenizerFolder, int vocabSize)
    {
        var path = Path.Combine(tokenizerFolder, "tokenizer.json");
        if (!File.Exists(path))
            throw new ModelBuildException($"{path}: not found (a GGUF file carries the tokenizer)");
        using var doc = ParseJson(path);
        var root = doc.RootElement;
        if (!root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
            throw new ModelBuildException($"{path}: no 'model' object");
        var type = model.TryGetProperty("type", out var t) ? t.GetString() : null;
        if (type != "BPE")
            throw new ModelBuildException($"{path}: tokenizer model '{type}' is not supported for GGUF (byte-level BPE only)");

        var tokens = new string?[vocabSize];
        var types = new int[vocabSize];
        void Set(string token, int id, int tokenType)
        {
            if (id < 0 || id >= vocabSize)
                throw new ModelBuildException($"{path}: token '{token}' has id {id}, outside the model's vocabulary of {vocabSize}");
            tokens[id] = token;
            types[id] = tokenType;
        }
        foreach (var entry in model.GetProperty("vocab").EnumerateObject())
            Set(entry.Name, entry.Value.GetInt32(), Normal);
        if (root.TryGetProperty("added_tokens", out var added) && added.ValueKind == JsonValueKind.Array)
        {
            foreach (var token in added.EnumerateArray())
            {
                var special = token.TryGetProperty("special", out var s) && s.ValueKind == JsonValueKind.True;
                Set(token.GetProperty("content").GetString() ?? "", token.GetProperty("id").GetInt32(), special ? Control : UserDefined);
            }
        }
        // Rows of the embedding no token names (a vocabulary padded to a round size) get placeholder names.
        for (var id = 0; id < vocabSize; id++)
        {
            if (tokens[id] is null)
            {
                tokens[id] = $"[PAD{id}]";
                types[id] = Unused;
            }
        }

        var merges = new List<string>();
        if (model.TryGetProperty("merges", out var mergeList))
        {
            foreach (var merge in mergeList.EnumerateArray())
            {
                // Older files write "a b", newer ones ["a", "b"].
                merges.Add(merge.ValueKind == JsonValueKind.Array
                    ? $"{merge[0].GetString()} {merge[1].GetString()}"
                    : merge.GetString() ?? "");
            }
        }
        return new GgufVocabulary(tokens!, types, [.. merges], PreTokenizerName(root, path), AddBosToken(tokenizerFolder));
    }

    private static string PreTokenizerName(JsonElement root, string path)
    {
        if (!root.TryGetProperty("pre_tokenizer", out var pre) || pre.ValueKind != JsonValueKind.Object)
            throw new ModelBuildException($"{path}: no pre_tokenizer; GGUF needs a byte-level one");
        var steps = pre.GetProperty("type").GetString() == "Sequence" ? pre.GetProperty("pretokenizers").EnumerateArray().ToList() : [pre];
        string? pattern = null;
        var byteLevel = false;
        var byteLevelRegex = false;
        foreach (var step in steps)
        {
            switch (step.GetProperty("type").GetString())
            {
                case "Split" when step.TryGetProperty("pattern", out var p) && p.TryGetProperty("Regex", out var regex):
                    pattern = regex.GetString();
                    break;
                case "ByteLevel":
                    byteLevel = true;
                    byteLevelRegex = !step.TryGetProperty("use_regex", out var useRegex) || useRegex.ValueKind != JsonValueKind.False;
                    break;
            }
        }
        if (!byteLevel)
            throw new ModelBuildException($"{path}: the pre-tokenizer is not byte-level; GGUF output supports byte-level BPE only");
        if (pattern is null && byteLevelRegex)
            return "gpt-2";
        foreach (var (known, name) in KnownSplits)
        {
            if (pattern == known)
                return name;
        }
        throw new ModelBuildException($"{path}: llama.cpp has no pre-tokenizer for the split pattern {pattern}");
    }

    private static bool AddBosToken(string tokenizerFolder)
    {
        var path = Path.Combine(tokenizerFolder, "tokenizer_config.json");
        if (!File.Exists(path))
            return false;
        using var doc = ParseJson(path);
        return doc.RootElement.TryGetProperty("add_bos_token", out var add) && add.ValueKind == JsonValueKind.True;
    }

    private static JsonDocument ParseJson(string path)
    {
        try
        {
            return JsonDocument.Parse(File.ReadAllText(path));
        }
        catch (JsonException e)
        {
            throw new ModelBuildException($"{path}: not valid JSON ({e.Message})", e);
        }
    }
}
