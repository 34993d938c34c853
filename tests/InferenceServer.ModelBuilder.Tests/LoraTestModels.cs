using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using InferenceServer.Model;
using InferenceServer.ModelBuilder.Checkpoint;
using InferenceServer.ModelBuilder.Lora;
using InferenceServer.Tests;

namespace InferenceServer.ModelBuilder.Tests;

/// <summary>A PEFT LoRA adapter as the tests write it: which modules, rank, alpha, and the seed of its random weights.</summary>
internal sealed record PeftSpec(string Name, string[] Targets, int Rank, double Alpha, ulong Seed, bool RsLora = false)
{
    public double Scale => RsLora ? Alpha / Math.Sqrt(Rank) : Alpha / Rank;
}

/// <summary>
/// Writes Hugging Face folders for the adapter tests, independently of the converter: a small
/// random Llama base (config.json, model.safetensors), PEFT adapter folders with random low-rank
/// weights (adapter_config.json, adapter_model.safetensors, PEFT's tensor names), and the merged
/// model of an adapter, W + scale * B A folded into each targeted weight.
/// </summary>
internal static class LoraTestModels
{
    public static HfConfig Config { get; } = new()
    {
        Architecture = "LlamaForCausalLM",
        HiddenSize = 64,
        IntermediateSize = 96,
        NumAttentionHeads = 4,
        NumKeyValueHeads = 2,
        NumHiddenLayers = 2,
        VocabSize = 256,
        HeadDim = 16,
        MaxPositionEmbeddings = 128,
        BosTokenId = 1,
        EosTokenIds = [2],
    };

    /// <summary>Each module's weight shape [out, in].</summary>
    public static (int Out, int In) Shape(string module) => module switch
    {
        "q_proj" => (Config.NumAttentionHeads * Config.HeadDim, Config.HiddenSize),
        "k_proj" or "v_proj" => (Config.NumKeyValueHeads * Config.HeadDim, Config.HiddenSize),
        "o_proj" => (Config.HiddenSize, Config.NumAttentionHeads * Config.HeadDim),
        "gate_proj" or "up_proj" => (Config.IntermediateSize, Config.HiddenSize),
        "down_proj" => (Config.HiddenSize, Config.IntermediateSize),
        _ => throw new ArgumentOutOfRangeException(nameof(module), module, "not a decoder projection"),
    };

    public static string Section(string module) => module is "gate_proj" or "up_proj" or "down_proj" ? "mlp" : "self_attn";

    /// <summary>The base model's tensors, from random weights with a spread that makes logits differ clearly.</summary>
    public static Dictionary<string, (long[] Shape, float[] Values)> BaseWeights()
    {
        var c = Config;
        var shapes = new Dictionary<string, long[]>
        {
            ["model.embed_tokens.weight"] = [c.VocabSize, c.HiddenSize],
            ["model.norm.weight"] = [c.HiddenSize],
            ["lm_head.weight"] = [c.VocabSize, c.HiddenSize],
        };
        for (var layer = 0; layer < c.NumHiddenLayers; layer++)
        {
            shapes[$"model.layers.{layer}.input_layernorm.weight"] = [c.HiddenSize];
            shapes[$"model.layers.{layer}.post_attention_layernorm.weight"] = [c.HiddenSize];
            foreach (var module in Model.Lora.LoraNames.Modules)
            {
                var (o, i) = Shape(module);
                shapes[$"model.layers.{layer}.{Section(module)}.{module}.weight"] = [o, i];
            }
        }
        using var random = new RandomWeights(seed: 7, standardDeviation: 0.1f);
        return shapes.ToDictionary(s => s.Key, s => (s.Value, random.Read(s.Key, s.Value)));
    }

    public static void WriteHfFolder(string folder, Dictionary<string, (long[] Shape, float[] Values)> weights)
    {
        Directory.CreateDirectory(folder);
        var c = Config;
        var config = new JsonObject
        {
            ["architectures"] = new JsonArray("LlamaForCausalLM"),
            ["hidden_size"] = c.HiddenSize,
            ["intermediate_size"] = c.IntermediateSize,
            ["num_attention_heads"] = c.NumAttentionHeads,
            ["num_key_value_heads"] = c.NumKeyValueHeads,
            ["num_hidden_layers"] = c.NumHiddenLayers,
            ["vocab_size"] = c.VocabSize,
            ["head_dim"] = c.HeadDim,
            ["max_position_embeddings"] = c.MaxPositionEmbeddings,
            ["rms_norm_eps"] = 1e-6,
            ["rope_theta"] = 10000.0,
            ["tie_word_embeddings"] = false,
            ["bos_token_id"] = c.BosTokenId,
            ["eos_token_id"] = 2,
            ["hidden_act"] = "silu",
        };
        File.WriteAllText(Path.Combine(folder, "config.json"), config.ToJsonString());
        SafetensorsTestFile.Write(Path.Combine(folder, "model.safetensors"), weights.Select(w => F32(w.Key, w.Value.Shape, w.Value.Values)));
    }

    public static SafetensorsTensor F32(string name, long[] shape, float[] values) =>
        new(name, "F32", shape, MemoryMarshal.AsBytes(values.AsSpan()).ToArray());

    public static string AName(int layer, string module) => $"base_model.model.model.layers.{layer}.{Section(module)}.{module}.lora_A.weight";

    public static string BName(int layer, string module) => $"base_model.model.model.layers.{layer}.{Section(module)}.{module}.lora_B.weight";

    /// <summary>The adapter's A [r, in] and B [out, r] per (layer, module).</summary>
    public static Dictionary<(int Layer, string Module), (float[] A, float[] B)> AdapterWeights(PeftSpec spec)
    {
        using var random = new RandomWeights(spec.Seed, standardDeviation: 0.1f);
        var result = new Dictionary<(int, string), (float[], float[])>();
        for (var layer = 0; layer < Config.NumHiddenLayers; layer++)
        {
            foreach (var module in spec.Targets)
            {
                var (o, i) = Shape(module);
                result[(layer, module)] = (random.Read(AName(layer, module), [spec.Rank, i]), random.Read(BName(layer, module), [o, spec.Rank]));
            }
        }
        return result;
    }

    /// <summary>A PEFT folder; <paramref name="editConfig"/> and <paramref name="editTensors"/> break it on purpose.</summary>
    public static string WritePeftFolder(string folder, PeftSpec spec, Action<JsonObject>? editConfig = null, Func<List<SafetensorsTensor>, List<SafetensorsTensor>>? editTensors = null)
    {
        Directory.CreateDirectory(folder);
        var config = new JsonObject
        {
            ["peft_type"] = "LORA",
            ["task_type"] = "CAUSAL_LM",
            ["base_model_name_or_path"] = "random-llama",
            ["r"] = spec.Rank,
            ["lora_alpha"] = spec.Alpha,
            ["lora_dropout"] = 0.0,
            ["target_modules"] = new JsonArray(spec.Targets.Select(t => (JsonNode)t).ToArray()),
            ["use_rslora"] = spec.RsLora,
            ["use_dora"] = false,
            ["bias"] = "none",
            ["fan_in_fan_out"] = false,
            ["modules_to_save"] = null,
            ["rank_pattern"] = new JsonObject(),
            ["alpha_pattern"] = new JsonObject(),
        };
        editConfig?.Invoke(config);
        File.WriteAllText(Path.Combine(folder, PeftAdapter.ConfigFileName), config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        var tensors = new List<SafetensorsTensor>();
        foreach (var ((layer, module), (a, b)) in AdapterWeights(spec))
        {
            var (o, i) = Shape(module);
            tensors.Add(F32(AName(layer, module), [spec.Rank, i], a));
            tensors.Add(F32(BName(layer, module), [o, spec.Rank], b));
        }
        SafetensorsTestFile.Write(Path.Combine(folder, PeftAdapter.WeightsFileName), editTensors?.Invoke(tensors) ?? tensors);
        return folder;
    }

    /// <summary>The base weights with W + scale * B A for every module the adapter targets (in double).</summary>
    public static Dictionary<string, (long[] Shape, float[] Values)> Merged(Dictionary<string, (long[] Shape, float[] Values)> baseWeights, PeftSpec spec)
    {
        var merged = baseWeights.ToDictionary(w => w.Key, w => (w.Value.Shape, (float[])w.Value.Values.Clone()));
        foreach (var ((layer, module), (a, b)) in AdapterWeights(spec))
        {
            var (outputs, inputs) = Shape(module);
            var weight = merged[$"model.layers.{layer}.{Section(module)}.{module}.weight"].Item2;
            for (var o = 0; o < outputs; o++)
            {
                for (var i = 0; i < inputs; i++)
                {
                    double sum = 0;
                    for (var j = 0; j < spec.Rank; j++)
                        sum += (double)b[o * spec.Rank + j] * a[j * inputs + i];
                    weight[o * inputs + i] = (float)(weight[o * inputs + i] + spec.Scale * sum);
                }
            }
        }
        return merged;
    }
}

/// <summary>
/// The models the adapter tests share, built once: the plain base, the base with adapter inputs
/// for every projection (fp32 and int4) with two converted adapters, and each adapter's merged model.
/// </summary>
public sealed class LoraFixture : IDisposable
{
    private readonly TempFolder _temp = new();

    /// <summary>Every projection, rank 4.</summary>
    internal static PeftSpec Everywhere { get; } = new("everywhere", ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], 4, 8, Seed: 11);

    /// <summary>q and v only (PEFT's default targets), rank 8, rank-stabilized scaling.</summary>
    internal static PeftSpec QueryValue { get; } = new("query-value", ["q_proj", "v_proj"], 8, 16, Seed: 12, RsLora: true);

    public string Root => _temp.Path;
    public ModelFolder Plain { get; }
    public ModelFolder WithAdapters { get; }
    public ModelFolder Int4WithAdapters { get; }
    internal Dictionary<string, ModelFolder> MergedModels { get; } = [];
    internal Dictionary<string, ModelFolder> Int4MergedModels { get; } = [];
    internal Dictionary<string, string> PeftFolders { get; } = [];

    public LoraFixture()
    {
        var weights = LoraTestModels.BaseWeights();
        var hf = _temp.Combine("hf-base");
        LoraTestModels.WriteHfFolder(hf, weights);
        Plain = Build(hf, "plain", new BuildOptions());
        WithAdapters = Build(hf, "with-adapters", new BuildOptions { LoraTargets = Model.Lora.LoraNames.Modules });
        Int4WithAdapters = Build(hf, "int4-with-adapters", new BuildOptions { Precision = Precision.Int4, LoraTargets = Model.Lora.LoraNames.Modules });
        foreach (var spec in new[] { Everywhere, QueryValue })
        {
            var peft = LoraTestModels.WritePeftFolder(_temp.Combine($"peft-{spec.Name}"), spec);
            PeftFolders[spec.Name] = peft;
            LoraAdapterConverter.Convert(peft, WithAdapters.Path, spec.Name);
            LoraAdapterConverter.Convert(peft, Int4WithAdapters.Path, spec.Name);
            var mergedHf = _temp.Combine($"hf-merged-{spec.Name}");
            LoraTestModels.WriteHfFolder(mergedHf, LoraTestModels.Merged(weights, spec));
            MergedModels[spec.Name] = Build(mergedHf, $"merged-{spec.Name}", new BuildOptions());
            Int4MergedModels[spec.Name] = Build(mergedHf, $"int4-merged-{spec.Name}", new BuildOptions { Precision = Precision.Int4 });
        }
    }

    private ModelFolder Build(string hf, string name, BuildOptions options)
    {
        DecoderModelBuilder.BuildFromHuggingFace(hf, _temp.Combine(name), options);
        return ModelFolder.Load(_temp.Combine(name));
    }

    public static DecoderRunner Runner(ModelFolder folder, int slots = 1) =>
        new(folder, new RunnerOptions { MaxBatch = slots, MaxSequenceLength = 64, IntraOpThreads = 1 });

    public void Dispose() => _temp.Dispose();
}
