using System.Text.Json;
using System.Text.Json.Serialization;

namespace InferenceServer.Model;

/// <summary>
/// genai_config.json: the layout onnxruntime-genai's model builder writes, which our builder
/// writes too, so a folder from either loads the same way. Only the fields the server reads or
/// the builder writes are modelled; unknown fields are ignored on load.
/// </summary>
public sealed class GenaiConfig
{
    [JsonPropertyName("model")] public GenaiModelSection Model { get; set; } = new();
    [JsonPropertyName("search")] public GenaiSearchSection Search { get; set; } = new();

    public static GenaiConfig Parse(string json, string sourceName)
    {
        GenaiConfig? config;
        try
        {
            config = JsonSerializer.Deserialize(json, GenaiConfigJsonContext.Default.GenaiConfig);
        }
        catch (JsonException e)
        {
            throw new ModelLoadException($"{sourceName}: not valid JSON ({e.Message})", e);
        }
        if (config is null)
            throw new ModelLoadException($"{sourceName}: empty document");
        config.Validate(sourceName);
        return config;
    }

    public string ToJson() => JsonSerializer.Serialize(this, GenaiConfigJsonContext.Default.GenaiConfig);

    private void Validate(string sourceName)
    {
        var d = Model.Decoder;
        void Require(bool ok, string what)
        {
            if (!ok) throw new ModelLoadException($"{sourceName}: {what}");
        }
        Require(!string.IsNullOrEmpty(d.Filename), "model.decoder.filename is missing");
        Require(d.NumHiddenLayers > 0, "model.decoder.num_hidden_layers must be positive");
        Require(d.NumAttentionHeads > 0, "model.decoder.num_attention_heads must be positive");
        Require(d.NumKeyValueHeads > 0, "model.decoder.num_key_value_heads must be positive");
        Require(d.HeadSize > 0, "model.decoder.head_size must be positive");
        Require(Model.VocabSize > 0, "model.vocab_size must be positive");
        Require(Model.ContextLength > 0, "model.context_length must be positive");
        Require(d.Inputs.PastKeyNames.Contains(LayerNames.Placeholder, StringComparison.Ordinal), "model.decoder.inputs.past_key_names needs a %d placeholder");
        Require(d.Inputs.PastValueNames.Contains(LayerNames.Placeholder, StringComparison.Ordinal), "model.decoder.inputs.past_value_names needs a %d placeholder");
        Require(d.Outputs.PresentKeyNames.Contains(LayerNames.Placeholder, StringComparison.Ordinal), "model.decoder.outputs.present_key_names needs a %d placeholder");
        Require(d.Outputs.PresentValueNames.Contains(LayerNames.Placeholder, StringComparison.Ordinal), "model.decoder.outputs.present_value_names needs a %d placeholder");
    }
}

public sealed class GenaiModelSection
{
    [JsonPropertyName("type")] public string Type { get; set; } = "llama";
    [JsonPropertyName("bos_token_id")] public int BosTokenId { get; set; }

    /// <summary>One id or a list: onnxruntime-genai writes either.</summary>
    [JsonPropertyName("eos_token_id")]
    [JsonConverter(typeof(IntOrIntArrayConverter))]
    public int[] EosTokenId { get; set; } = [];

    [JsonPropertyName("pad_token_id")]
    [JsonConverter(typeof(IntOrIntArrayConverter))]
    public int[] PadTokenId { get; set; } = [];

    [JsonPropertyName("context_length")] public int ContextLength { get; set; }
    [JsonPropertyName("vocab_size")] public int VocabSize { get; set; }
    [JsonPropertyName("decoder")] public GenaiDecoderSection Decoder { get; set; } = new();
}

public sealed class GenaiDecoderSection
{
    [JsonPropertyName("filename")] public string Filename { get; set; } = "model.onnx";
    [JsonPropertyName("head_size")] public int HeadSize { get; set; }
    [JsonPropertyName("hidden_size")] public int HiddenSize { get; set; }
    [JsonPropertyName("num_attention_heads")] public int NumAttentionHeads { get; set; }
    [JsonPropertyName("num_hidden_layers")] public int NumHiddenLayers { get; set; }
    [JsonPropertyName("num_key_value_heads")] public int NumKeyValueHeads { get; set; }
    [JsonPropertyName("session_options")] public GenaiSessionOptions SessionOptions { get; set; } = new();
    [JsonPropertyName("inputs")] public GenaiDecoderInputs Inputs { get; set; } = new();
    [JsonPropertyName("outputs")] public GenaiDecoderOutputs Outputs { get; set; } = new();

    /// <summary>The folder holds the paged graph (PagedAttention over block pools, CUDA only).</summary>
    [JsonIgnore]
    public bool IsPaged => Inputs.BlockTable is not null;
}

public sealed class GenaiSessionOptions
{
    [JsonPropertyName("log_id")] public string LogId { get; set; } = "inferenceserver";

    /// <summary>ONNX Runtime's session log severity (0 verbose ... 3 errors, 4 fatal); null leaves ONNX Runtime's default (warnings).</summary>
    [JsonPropertyName("log_severity_level")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public int? LogSeverityLevel { get; set; }
    [JsonPropertyName("provider_options")] public List<JsonElement> ProviderOptions { get; set; } = [];
}

public sealed class GenaiDecoderInputs
{
    [JsonPropertyName("input_ids")] public string InputIds { get; set; } = "input_ids";
    /// <summary>null in the paged graph, whose sequences are delimited by cumulative_sequence_length (written as null, so it reads back so).</summary>
    [JsonPropertyName("attention_mask")] public string? AttentionMask { get; set; } = "attention_mask";
    [JsonPropertyName("position_ids")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? PositionIds { get; set; }
    [JsonPropertyName("past_key_names")] public string PastKeyNames { get; set; } = "past_key_values.%d.key";
    [JsonPropertyName("past_value_names")] public string PastValueNames { get; set; } = "past_key_values.%d.value";

    // The paged graph's (PagedAttention) inputs; their presence marks a paged model folder.
    [JsonPropertyName("cumulative_sequence_length")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? CumulativeSequenceLength { get; set; }
    [JsonPropertyName("past_sequence_lengths")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? PastSequenceLengths { get; set; }
    [JsonPropertyName("block_table")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? BlockTable { get; set; }
    [JsonPropertyName("attention_metadata")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? AttentionMetadata { get; set; }
}

public sealed class GenaiDecoderOutputs
{
    [JsonPropertyName("logits")] public string Logits { get; set; } = "logits";
    [JsonPropertyName("present_key_names")] public string PresentKeyNames { get; set; } = "present.%d.key";
    [JsonPropertyName("present_value_names")] public string PresentValueNames { get; set; } = "present.%d.value";

    // The paged graph's logits reduced on the device for sampling.
    [JsonPropertyName("next_token")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? NextToken { get; set; }
    [JsonPropertyName("top_logits")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? TopLogits { get; set; }
    [JsonPropertyName("top_ids")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? TopIds { get; set; }
    [JsonPropertyName("logsumexp")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? LogSumExp { get; set; }
}

public sealed class GenaiSearchSection
{
    [JsonPropertyName("do_sample")] public bool DoSample { get; set; }
    [JsonPropertyName("max_length")] public int MaxLength { get; set; }
    [JsonPropertyName("min_length")] public int MinLength { get; set; }
    [JsonPropertyName("num_beams")] public int NumBeams { get; set; } = 1;
    [JsonPropertyName("num_return_sequences")] public int NumReturnSequences { get; set; } = 1;
    [JsonPropertyName("past_present_share_buffer")] public bool PastPresentShareBuffer { get; set; } = true;
    [JsonPropertyName("repetition_penalty")] public double RepetitionPenalty { get; set; } = 1.0;
    [JsonPropertyName("temperature")] public double Temperature { get; set; } = 1.0;
    [JsonPropertyName("top_k")] public int TopK { get; set; } = 1;
    [JsonPropertyName("top_p")] public double TopP { get; set; } = 1.0;
}

/// <summary>Reads a JSON number or an array of numbers; writes a number when there is exactly one.</summary>
public sealed class IntOrIntArrayConverter : JsonConverter<int[]>
{
    public override int[] Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType == JsonTokenType.Number)
            return [reader.GetInt32()];
        if (reader.TokenType == JsonTokenType.Null)
            return [];
        if (reader.TokenType != JsonTokenType.StartArray)
            throw new JsonException("expected a token id or a list of token ids");
        var ids = new List<int>();
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
            ids.Add(reader.GetInt32());
        return [.. ids];
    }

    public override void Write(Utf8JsonWriter writer, int[] value, JsonSerializerOptions options)
    {
        if (value.Length == 1)
        {
            writer.WriteNumberValue(value[0]);
            return;
        }
        writer.WriteStartArray();
        foreach (var id in value)
            writer.WriteNumberValue(id);
        writer.WriteEndArray();
    }
}

[JsonSourceGenerationOptions(WriteIndented = true)]
[JsonSerializable(typeof(GenaiConfig))]
internal sealed partial class GenaiConfigJsonContext : JsonSerializerContext;
