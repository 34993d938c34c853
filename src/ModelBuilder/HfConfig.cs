using System.Text.Json;

namespace InferenceServer.ModelBuilder;

/// <summary>
/// The parts of a Hugging Face config.json the decoder needs, for the architectures we convert:
/// LlamaForCausalLM, and Qwen2ForCausalLM (Llama with q/k/v biases, often tied embeddings).
/// </summary>
public sealed record HfConfig
{
    public static readonly IReadOnlyList<string> SupportedArchitectures = ["LlamaForCausalLM", "Qwen2ForCausalLM"];

    public required string Architecture { get; init; }
    public required int HiddenSize { get; init; }
    public required int IntermediateSize { get; init; }
    public required int NumAttentionHeads { get; init; }
    public required int NumKeyValueHeads { get; init; }
    public required int NumHiddenLayers { get; init; }
    public required int VocabSize { get; init; }
    public required int HeadDim { get; init; }
    public required int MaxPositionEmbeddings { get; init; }
    public double RmsNormEps { get; init; } = 1e-6;
    public double RopeTheta { get; init; } = 10000;
    public RopeScaling? RopeScaling { get; init; }
    public bool TieWordEmbeddings { get; init; }
    public bool AttentionBias { get; init; }
    public int BosTokenId { get; init; }
    public int[] EosTokenIds { get; init; } = [];
    public int? PadTokenId { get; init; }

    public bool IsQwen2 => Architecture == "Qwen2ForCausalLM";

    /// <summary>q/k/v projections carry biases: always for Qwen2, optionally for Llama.</summary>
    public bool QkvBias => IsQwen2 || AttentionBias;

    public static HfConfig Load(string path)
    {
        if (!File.Exists(path))
            throw new ModelBuildException($"{path}: not found");
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(path));
            return FromJson(doc.RootElement, path);
        }
        catch (JsonException e)
        {
            throw new ModelBuildException($"{path}: not valid JSON ({e.Message})", e);
        }
    }

    public static HfConfig FromJson(JsonElement root, string source)
    {
        string architecture = root.TryGetProperty("architectures", out var archs) && archs.ValueKind == JsonValueKind.Array && archs.GetArrayLength() > 0
            ? archs[0].GetString() ?? ""
            : throw new ModelBuildException($"{source}: no 'architectures' entry; supported are {string.Join(", ", SupportedArchitectures)}");
        if (!SupportedArchitectures.Contains(architecture))
            throw new ModelBuildException($"{source}: unsupported architecture '{architecture}'; supported are {string.Join(", ", SupportedArchitectures)}");

        int Int(string name) => OptionalInt(name) ?? throw new ModelBuildException($"{source}: '{name}' is missing or not a number");
        int? OptionalInt(string name) => root.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null ? ToInt(v, source, name) : null;
        double? OptionalDouble(string name) => root.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : null;
        bool? OptionalBool(string name) => root.TryGetProperty(name, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : null;

        var hidden = Int("hidden_size");
        var heads = Int("num_attention_heads");
        var config = new HfConfig
        {
            Architecture = architecture,
            HiddenSize = hidden,
            IntermediateSize = Int("intermediate_size"),
            NumAttentionHeads = heads,
            NumKeyValueHeads = OptionalInt("num_key_value_heads") ?? heads,
            NumHiddenLayers = Int("num_hidden_layers"),
            VocabSize = Int("vocab_size"),
            HeadDim = OptionalInt("head_dim") ?? (heads > 0 ? hidden / heads : 0),
            MaxPositionEmbeddings = Int("max_position_embeddings"),
            RmsNormEps = OptionalDouble("rms_norm_eps") ?? 1e-6,
            RopeTheta = OptionalDouble("rope_theta") ?? 10000,
            RopeScaling = root.TryGetProperty("rope_scaling", out var scaling) ? RopeScaling.FromJson(scaling, source) : null,
            TieWordEmbeddings = OptionalBool("tie_word_embeddings") ?? false,
            AttentionBias = OptionalBool("attention_bias") ?? false,
            BosTokenId = OptionalInt("bos_token_id") ?? 0,
            EosTokenIds = ReadIds(root, "eos_token_id", source),
            PadTokenId = OptionalInt("pad_token_id"),
        };
        if (OptionalBool("mlp_bias") == true)
            throw new ModelBuildException($"{source}: 'mlp_bias' true is not supported");
        if (root.TryGetProperty("hidden_act", out var act) && act.GetString() is { } activation && activation != "silu")
            throw new ModelBuildException($"{source}: hidden_act '{activation}' is not supported (silu)");
        config.Validate(source);
        return config;
    }

    private static int[] ReadIds(JsonElement root, string name, string source)
    {
        if (!root.TryGetProperty(name, out var v))
            return [];
        return v.ValueKind switch
        {
            JsonValueKind.Number => [ToInt(v, source, name)],
            JsonValueKind.Array => v.EnumerateArray().Select(e => ToInt(e, source, name)).ToArray(),
            _ => [],
        };
    }

    private static int ToInt(JsonElement value, string source, string name) =>
        value.ValueKind == JsonValueKind.Number && value.TryGetInt32(out var result)
            ? result
            : throw new ModelBuildException($"{source}: '{name}' must be an integer, got {value.GetRawText()}");

    public void Validate(string source)
    {
        void Require(bool ok, string message)
        {
            if (!ok) throw new ModelBuildException($"{source}: {message}");
        }
        Require(HiddenSize > 0 && IntermediateSize > 0 && NumHiddenLayers > 0 && VocabSize > 0 && MaxPositionEmbeddings > 0,
            "hidden_size, intermediate_size, num_hidden_layers, vocab_size and max_position_embeddings must be positive");
        Require(NumAttentionHeads > 0 && NumKeyValueHeads > 0, "head counts must be positive");
        Require(NumAttentionHeads % NumKeyValueHeads == 0,
            $"num_attention_heads ({NumAttentionHeads}) must be a multiple of num_key_value_heads ({NumKeyValueHeads})");
        // GroupQueryAttention's rotary kernels need the head size to be a multiple of 16.
        Require(HeadDim > 0 && HeadDim % 16 == 0, $"head_dim {HeadDim} is not a multiple of 16, which GroupQueryAttention's rotary embedding needs");
        Require(RmsNormEps > 0, "rms_norm_eps must be positive");
    }
}

/// <summary>rope_scaling: "llama3" (Llama 3.1+) and "linear" are supported.</summary>
public sealed record RopeScaling(string Type, double Factor, double LowFreqFactor, double HighFreqFactor, int OriginalMaxPositionEmbeddings)
{
    public static RopeScaling? FromJson(JsonElement element, string source)
    {
        if (element.ValueKind == JsonValueKind.Null)
            return null;
        if (element.ValueKind != JsonValueKind.Object)
            throw new ModelBuildException($"{source}: 'rope_scaling' must be an object or null");
        var type = element.TryGetProperty("rope_type", out var t) ? t.GetString()
            : element.TryGetProperty("type", out var t2) ? t2.GetString() : null;
        double Number(string name, double fallback) => element.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : fallback;
        return type switch
        {
            "default" => null,
            "linear" => new RopeScaling("linear", Number("factor", 1), 0, 0, 0),
            "llama3" => new RopeScaling("llama3", Number("factor", 8), Number("low_freq_factor", 1), Number("high_freq_factor", 4),
                (int)Number("original_max_position_embeddings", 8192)),
            _ => throw new ModelBuildException($"{source}: rope_scaling type '{type}' is not supported (llama3, linear)"),
        };
    }

    /// <summary>Adjusts the inverse frequencies in place the way the scaling type defines.</summary>
    public void Apply(Span<double> inverseFrequencies)
    {
        switch (Type)
        {
            case "linear":
                for (var i = 0; i < inverseFrequencies.Length; i++)
                    inverseFrequencies[i] /= Factor;
                break;
            case "llama3":
                // Long wavelengths are slowed by the factor, short ones kept, and the band between
                // is blended smoothly.
                var lowFreqWavelength = OriginalMaxPositionEmbeddings / LowFreqFactor;
                var highFreqWavelength = OriginalMaxPositionEmbeddings / HighFreqFactor;
                for (var i = 0; i < inverseFrequencies.Length; i++)
                {
                    var frequency = inverseFrequencies[i];
                    var wavelength = 2 * Math.PI / frequency;
                    if (wavelength > lowFreqWavelength)
                        inverseFrequencies[i] = frequency / Factor;
                    else if (wavelength >= highFreqWavelength)
                    {
                        var smooth = (OriginalMaxPositionEmbeddings / wavelength - LowFreqFactor) / (HighFreqFactor - LowFreqFactor);
                        inverseFrequencies[i] = (1 - smooth) * frequency / Factor + smooth * frequency;
                    }
                }
                break;
        }
    }
}
