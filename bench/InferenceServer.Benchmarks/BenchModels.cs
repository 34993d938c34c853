using InferenceServer.Model;
using InferenceServer.ModelBuilder;

namespace InferenceServer.Benchmarks;

/// <summary>Random-weight models for benchmarks, built once and kept in the temp folder.</summary>
public static class BenchModels
{
    /// <summary>About 20M parameters: Llama layout, 4 layers of width 512, 8 heads over 4 KV heads, 8k vocabulary.</summary>
    public static HfConfig Small20M { get; } = new()
    {
        Architecture = "LlamaForCausalLM",
        HiddenSize = 512,
        IntermediateSize = 1408,
        NumAttentionHeads = 8,
        NumKeyValueHeads = 4,
        NumHiddenLayers = 4,
        VocabSize = 8192,
        HeadDim = 64,
        MaxPositionEmbeddings = 2048,
        EosTokenIds = [2],
    };

    public static long ParameterCount(HfConfig c)
    {
        long attention = (long)c.HiddenSize * (c.NumAttentionHeads + 2 * c.NumKeyValueHeads) * c.HeadDim + (long)c.NumAttentionHeads * c.HeadDim * c.HiddenSize;
        long mlp = 3L * c.HiddenSize * c.IntermediateSize;
        long embeddings = (c.TieWordEmbeddings ? 1L : 2L) * c.VocabSize * c.HiddenSize;
        return c.NumHiddenLayers * (attention + mlp + 2L * c.HiddenSize) + embeddings + c.HiddenSize;
    }

    public static ModelFolder Get(HfConfig config, string name, Precision precision = Precision.Fp32)
    {
        var path = Path.Combine(Path.GetTempPath(), "inferenceserver-bench", $"{name}-{precision}".ToLowerInvariant());
        if (!File.Exists(Path.Combine(path, ModelFolder.ConfigFileName)))
            DecoderModelBuilder.BuildRandom(config, path, new BuildOptions { Precision = precision, Overwrite = true }, seed: 1);
        return ModelFolder.Load(path);
    }
}
