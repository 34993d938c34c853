using InferenceServer.ModelBuilder;
using InferenceServer.Tests;

namespace InferenceServer.Model.Tests;

/// <summary>A small random Llama-style model folder, built once for a test class.</summary>
public sealed class SmallModelFixture : IDisposable
{
    private readonly TempFolder _temp = new();

    public static HfConfig Config { get; } = new()
    {
        Architecture = "LlamaForCausalLM",
        HiddenSize = 64,
        IntermediateSize = 128,
        NumAttentionHeads = 4,
        NumKeyValueHeads = 2,
        NumHiddenLayers = 2,
        VocabSize = 256,
        HeadDim = 16,
        MaxPositionEmbeddings = 128,
        EosTokenIds = [2],
    };

    public ModelFolder Folder { get; }

    public SmallModelFixture()
    {
        var path = _temp.Combine("small");
        // A larger spread than Hugging Face's 0.02 so that logits differ clearly between inputs.
        using var weights = new ModelBuilder.Checkpoint.RandomWeights(seed: 7, standardDeviation: 0.1f);
        DecoderModelBuilder.Build(Config, weights, path, new BuildOptions(), tokenizerFolder: null);
        Folder = ModelFolder.Load(path);
    }

    /// <summary>Seeded random token ids of the fixture's vocabulary, none of the first three (special) ids.</summary>
    public static int[] Tokens(int count, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => random.Next(3, Config.VocabSize)).ToArray();
    }

    public DecoderRunner CreateRunner(int slots = 4, int capacity = 64) =>
        new(Folder, new RunnerOptions { MaxBatch = slots, MaxSequenceLength = capacity, IntraOpThreads = 1 });

    public void Dispose() => _temp.Dispose();
}
