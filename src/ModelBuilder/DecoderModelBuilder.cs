using InferenceServer.Model;
using InferenceServer.ModelBuilder.Checkpoint;
using InferenceServer.ModelBuilder.Onnx;

namespace InferenceServer.ModelBuilder;

public sealed record BuildOptions
{
    public Precision Precision { get; init; } = Precision.Fp32;

    /// <summary>Dense (GroupQueryAttention, any provider) or paged (PagedAttention, CUDA).</summary>
    public GraphVariant Variant { get; init; } = GraphVariant.Dense;

    /// <summary>The paged graph returns this many largest logits per sequence (sorted) for sampling on the host.</summary>
    public int SamplingTopK { get; init; } = 64;

    /// <summary>Block size along the input dimension for int4 quantization.</summary>
    public int Int4BlockSize { get; init; } = 32;

    /// <summary>
    /// MatMulNBits' accuracy_level: the precision it computes in. 4 (int8 activations) is the
    /// fastest on CPUs; 1 computes in float32.
    /// </summary>
    public int Int4AccuracyLevel { get; init; } = 4;

    /// <summary>
    /// Return logits for every position ([batch, sequence, vocab]) instead of only each row's
    /// last one: for scoring a whole prompt (prompt logprobs, speculative checks).
    /// </summary>
    public bool LogitsForAllPositions { get; init; }

    /// <summary>
    /// Hugging Face module names (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)
    /// whose packed projections get adapter inputs, so LoRA adapters can be loaded at run time
    /// (<see cref="Model.Lora.LoraNames"/>). Empty: a plain graph.
    /// </summary>
    public IReadOnlyList<string> LoraTargets { get; init; } = [];

    /// <summary>
    /// The fill-in-the-middle order the model was trained for, written to serving.json
    /// (<see cref="ServingFile"/>); null: none (the server then prompts prefix, suffix, middle).
    /// </summary>
    public string? FimOrder { get; init; }

    /// <summary>Replace an existing output folder instead of failing.</summary>
    public bool Overwrite { get; init; }
}

/// <summary>
/// Writes a model folder in the dense or the paged graph contract (model.onnx with its weights in
/// model.onnx.data, genai_config.json, the tokenizer files) from a Hugging Face folder or from a
/// config with random weights. Everything is written into a temporary folder beside the target
/// and moved into place at the end, so a failed build leaves nothing half-written.
/// </summary>
public static class DecoderModelBuilder
{
    public const string GraphFileName = "model.onnx";
    public const string DataFileName = "model.onnx.data";

    // Files a Hugging Face folder may carry for its tokenizer; the server reads tokenizer.json.
    private static readonly string[] TokenizerFiles =
        ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt", "tokenizer.model"];

    /// <summary>Converts a Hugging Face folder (config.json, *.safetensors, tokenizer.json).</summary>
    public static void BuildFromHuggingFace(string hfFolder, string outputFolder, BuildOptions options)
    {
        if (!Directory.Exists(hfFolder))
            throw new ModelBuildException($"{hfFolder}: no such folder");
        var config = HfConfig.Load(Path.Combine(hfFolder, "config.json"));
        using var weights = new HfCheckpoint(hfFolder);
        Build(config, weights, outputFolder, options, hfFolder);
    }

    /// <summary>A model of the config's shape with deterministic random weights (tests, benchmarks).</summary>
    public static void BuildRandom(HfConfig config, string outputFolder, BuildOptions options, ulong seed, string? tokenizerFolder = null)
    {
        using var weights = new RandomWeights(seed);
        Build(config, weights, outputFolder, options, tokenizerFolder);
    }

    /// <summary>A model from any weight source (Hugging Face names and layout).</summary>
    public static void Build(HfConfig config, IWeightSource weights, string outputFolder, BuildOptions options, string? tokenizerFolder)
    {
        StagedFolder.Write(outputFolder, options.Overwrite, staging =>
        {
            WriteGraph(config, weights, staging, options);
            var genaiConfig = CreateGenaiConfig(config, options.Variant);
            if (options.LoraTargets.Count > 0)
            {
                // ONNX Runtime warns at load, once per adapter input, that an input with a default
                // is not folded as a constant, which is the point of it: keep its log to errors.
                genaiConfig.Model.Decoder.SessionOptions.LogSeverityLevel = (int)Microsoft.ML.OnnxRuntime.OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR;
            }
            File.WriteAllText(Path.Combine(staging, ModelFolder.ConfigFileName), genaiConfig.ToJson());
            CopyTokenizerFiles(tokenizerFolder, staging);
            if (options.FimOrder is not null)
                ServingFile.WriteFimOrder(staging, options.FimOrder);
        });
    }

    /// <summary>Copies the tokenizer files a folder has (tokenizer.json and its companions) into another.</summary>
    internal static void CopyTokenizerFiles(string? tokenizerFolder, string destination)
    {
        if (tokenizerFolder is null)
            return;
        foreach (var name in TokenizerFiles)
        {
            var source = Path.Combine(tokenizerFolder, name);
            if (File.Exists(source))
                File.Copy(source, Path.Combine(destination, name));
        }
    }

    private static void WriteGraph(HfConfig config, IWeightSource weights, string folder, BuildOptions options)
    {
        var model = new ModelProto
        {
            IrVersion = 10,
            ProducerName = "InferenceServer.ModelBuilder",
            ProducerVersion = typeof(DecoderModelBuilder).Assembly.GetName().Version?.ToString() ?? "0",
            DocString = $"{config.Architecture}, {options.Precision}",
        };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 21 });
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = GraphBuilder.MicrosoftDomain, Version = 1 });
        using (var data = new ExternalDataWriter(folder, DataFileName))
        {
            var graph = new GraphBuilder(data);
            DecoderGraph.Write(graph, config, weights, options);
            model.Graph = graph.Graph;
        }
        using var stream = File.Create(Path.Combine(folder, GraphFileName));
        using var output = new Google.Protobuf.CodedOutputStream(stream);
        model.WriteTo(output);
    }

    public static GenaiConfig CreateGenaiConfig(HfConfig config, GraphVariant variant = GraphVariant.Dense)
    {
        var paged = variant == GraphVariant.Paged;
        var eos = config.EosTokenIds.Length > 0 ? config.EosTokenIds : [0];
        return new GenaiConfig
        {
            Model = new GenaiModelSection
            {
                Type = config.IsQwen2 ? "qwen2" : "llama",
                BosTokenId = config.BosTokenId,
                EosTokenId = eos,
                PadTokenId = [config.PadTokenId ?? eos[0]],
                ContextLength = config.MaxPositionEmbeddings,
                VocabSize = config.VocabSize,
                Decoder = new GenaiDecoderSection
                {
                    Filename = GraphFileName,
                    HeadSize = config.HeadDim,
                    HiddenSize = config.HiddenSize,
                    NumAttentionHeads = config.NumAttentionHeads,
                    NumHiddenLayers = config.NumHiddenLayers,
                    NumKeyValueHeads = config.NumKeyValueHeads,
                    Inputs = new GenaiDecoderInputs
                    {
                        InputIds = DecoderGraph.InputIds,
                        AttentionMask = paged ? null : DecoderGraph.AttentionMask,
                        PastKeyNames = paged ? DecoderGraph.KeyCachePattern : DecoderGraph.PastKeyPattern,
                        PastValueNames = paged ? DecoderGraph.ValueCachePattern : DecoderGraph.PastValuePattern,
                        CumulativeSequenceLength = paged ? DecoderGraph.CumulativeSequenceLength : null,
                        PastSequenceLengths = paged ? DecoderGraph.PastSequenceLengths : null,
                        BlockTable = paged ? DecoderGraph.BlockTable : null,
                        AttentionMetadata = paged ? DecoderGraph.AttentionMetadata : null,
                    },
                    Outputs = new GenaiDecoderOutputs
                    {
                        Logits = DecoderGraph.Logits,
                        PresentKeyNames = paged ? DecoderGraph.KeyCacheOutPattern : DecoderGraph.PresentKeyPattern,
                        PresentValueNames = paged ? DecoderGraph.ValueCacheOutPattern : DecoderGraph.PresentValuePattern,
                        NextToken = paged ? DecoderGraph.NextToken : null,
                        TopLogits = paged ? DecoderGraph.TopLogits : null,
                        TopIds = paged ? DecoderGraph.TopIds : null,
                        LogSumExp = paged ? DecoderGraph.LogSumExp : null,
                    },
                },
            },
            Search = new GenaiSearchSection { MaxLength = config.MaxPositionEmbeddings },
        };
    }
}
