using System.Security.Cryptography;
using InferenceServer.Model;
using InferenceServer.Tests;

namespace InferenceServer.ModelBuilder.Tests;

/// <summary>
/// <see cref="GraphUpgrade"/> on the default model as it was committed before the
/// logits_to_keep input (tests/fixtures/legacy-graph/minicoder.onnx beside the unchanged weights
/// of models/minicoder): the weights stay byte for byte, the result is the committed graph, and
/// it computes what the old graph computed.
/// </summary>
public sealed class GraphUpgradeTests : IDisposable
{
    private static readonly string DefaultModel = Path.Combine(TestPaths.RepoRoot, "models", "minicoder");
    private static readonly string LegacyGraph = Path.Combine(TestPaths.RepoRoot, "tests", "fixtures", "legacy-graph", "minicoder.onnx");

    // Python completion prompts of the kind the model serves (the model card's examples).
    private static readonly string[] Prompts =
    [
        "class UID:\n    def __init__(self, data):\n        self.data = data\n\n    def __eq__(self, other):\n        if not isinstance(other, UID):\n            ",
        "def factorial(n):\n    if n == 0:\n        return 1\n",
        "class Point:\n    def __init__(self, x, y):\n        self.x = x\n",
        "import os\n\n\ndef read_lines(path):\n    with open(path) as f:\n",
    ];

    private readonly TempFolder _temp = new();

    public void Dispose() => _temp.Dispose();

    /// <summary>The default model's folder with the graph it had before the input.</summary>
    private string LegacyFolder()
    {
        var folder = _temp.Combine($"legacy-{Guid.NewGuid():N}");
        Directory.CreateDirectory(folder);
        foreach (var file in Directory.GetFiles(DefaultModel))
            File.Copy(file, Path.Combine(folder, Path.GetFileName(file)));
        File.Copy(LegacyGraph, Path.Combine(folder, DecoderModelBuilder.GraphFileName), overwrite: true);
        return folder;
    }

    private static DecoderRunner Runner(string folder) =>
        new(ModelFolder.Load(folder), new RunnerOptions { MaxBatch = 1, MaxSequenceLength = 256, IntraOpThreads = 1 });

    [Fact]
    public void Upgrading_the_legacy_default_model_gives_the_committed_graph_and_keeps_the_weights()
    {
        var folder = LegacyFolder();
        var dataPath = Path.Combine(folder, DecoderModelBuilder.DataFileName);
        var weightsBefore = SHA256.HashData(File.ReadAllBytes(dataPath));

        Assert.Equal(GraphUpgradeResult.Upgraded, GraphUpgrade.Upgrade(folder));

        Assert.Equal(weightsBefore, SHA256.HashData(File.ReadAllBytes(dataPath)));
        Assert.Equal(weightsBefore, SHA256.HashData(File.ReadAllBytes(Path.Combine(DefaultModel, DecoderModelBuilder.DataFileName))));
        var graphPath = Path.Combine(folder, DecoderModelBuilder.GraphFileName);
        Assert.Equal(File.ReadAllBytes(Path.Combine(DefaultModel, DecoderModelBuilder.GraphFileName)), File.ReadAllBytes(graphPath));
        Assert.Equal(Directory.GetFiles(DefaultModel).Length, Directory.GetFiles(folder).Length); // nothing left behind

        // A second upgrade finds nothing to do and writes nothing.
        var written = File.GetLastWriteTimeUtc(graphPath);
        Assert.Equal(GraphUpgradeResult.AlreadyCurrent, GraphUpgrade.Upgrade(folder));
        Assert.Equal(written, File.GetLastWriteTimeUtc(graphPath));
    }

    [Fact]
    public void The_upgraded_graph_has_the_nodes_a_fresh_build_of_that_shape_writes()
    {
        var upgraded = OnnxTestModel.Load(DefaultModel).Graph;
        var config = new HfConfig
        {
            Architecture = "LlamaForCausalLM",
            HiddenSize = 256,
            IntermediateSize = 768,
            NumAttentionHeads = 8,
            NumKeyValueHeads = 2,
            NumHiddenLayers = 8,
            VocabSize = 8192,
            HeadDim = 32,
            MaxPositionEmbeddings = 1024,
            EosTokenIds = [0],
        };
        var fresh = _temp.Combine("fresh");
        DecoderModelBuilder.BuildRandom(config, fresh, new BuildOptions { Precision = Precision.Int4 }, seed: 1);
        var built = OnnxTestModel.Load(fresh).Graph;

        static string Describe(Onnx.NodeProto n) => $"{n.Domain}:{n.OpType} {n.Name} ({string.Join(", ", n.Input)}) -> ({string.Join(", ", n.Output)})";
        Assert.Equal(built.Node.Select(Describe), upgraded.Node.Select(Describe));
        Assert.Equal(built.Input.Select(i => $"{i.Name} [{string.Join(", ", OnnxTestModel.Dims(i))}]"), upgraded.Input.Select(i => $"{i.Name} [{string.Join(", ", OnnxTestModel.Dims(i))}]"));
        Assert.Equal(built.Output.Select(o => $"{o.Name} [{string.Join(", ", OnnxTestModel.Dims(o))}]"), upgraded.Output.Select(o => $"{o.Name} [{string.Join(", ", OnnxTestModel.Dims(o))}]"));
        Assert.Equal(built.Initializer.Select(t => t.Name).Order(), upgraded.Initializer.Select(t => t.Name).Order());
    }

    [Fact]
    public void The_upgraded_default_model_gives_the_greedy_tokens_and_logits_of_the_old_graph()
    {
        var tokenizer = Tokenizer.Tokenizer.Load(Path.Combine(DefaultModel, ModelFolder.TokenizerFileName));
        using var legacy = Runner(LegacyFolder());
        using var upgraded = Runner(DefaultModel);
        Assert.False(legacy.HasMultiPositionLogits);
        Assert.True(upgraded.HasMultiPositionLogits);
        foreach (var text in Prompts)
        {
            var prompt = tokenizer.Encode(text);
            Assert.Equal(
                Greedy.Generate(legacy, prompt, 32, [0]),
                Greedy.Generate(upgraded, prompt, 32, [0]));
            // The same computation up to the logits: the same numbers.
            var before = legacy.Step(0, [new SequenceStep(0, prompt.Length)], prompt).ToArray();
            var after = upgraded.Step(0, [new SequenceStep(0, prompt.Length)], prompt).ToArray();
            Assert.Equal(before, after);
        }
    }

    [Fact]
    public void Logits_for_the_last_k_plus_1_positions_end_with_the_one_position_logits()
    {
        const int Drafts = 4;
        var tokenizer = Tokenizer.Tokenizer.Load(Path.Combine(DefaultModel, ModelFolder.TokenizerFileName));
        var tokens = tokenizer.Encode(Prompts[0]);
        var past = tokens.Length - Drafts - 1;
        using var runner = Runner(DefaultModel);
        using var reference = Runner(DefaultModel);
        var vocab = runner.VocabSize;

        runner.Step(0, [new SequenceStep(0, past)], tokens.AsSpan(0, past));
        var kept = runner.StepKeepingLogits(0, new SequenceStep(past, Drafts + 1), tokens.AsSpan(past), Drafts + 1).ToArray();
        var one = runner.StepKeepingLogits(0, new SequenceStep(past, Drafts + 1), tokens.AsSpan(past), 1).ToArray();
        Assert.Equal(one, kept.AsSpan((Drafts) * vocab).ToArray());
        // Every position against a prefill of the tokens up to it. Not against one-token steps:
        // MatMulNBits with int8 activations (accuracy level 4) multiplies a single row another way
        // than several, and the logits of a one-token step differ from a prefill's by up to 0.2
        // here, with or without this input.
        for (var i = 0; i <= Drafts; i++)
        {
            var prefix = tokens.AsSpan(0, past + i + 1);
            var prefilled = reference.Step(0, [new SequenceStep(0, prefix.Length)], prefix);
            Assert.InRange(Compare.MaxAbsDifference(prefilled, kept.AsSpan(i * vocab, vocab)), 0, 1e-3f);
        }
    }

    [Fact]
    public void Graphs_it_cannot_upgrade_are_refused_with_a_reason()
    {
        var all = _temp.Combine("all");
        DecoderModelBuilder.BuildFromHuggingFace(TestPaths.Oracle("llama"), all, new BuildOptions { LogitsForAllPositions = true });
        var error = Assert.Throws<ModelBuildException>(() => GraphUpgrade.Upgrade(all));
        Assert.Contains("build-model", error.Message, StringComparison.Ordinal);

        var notOnnx = LegacyFolder();
        File.WriteAllText(Path.Combine(notOnnx, DecoderModelBuilder.GraphFileName), "not a model");
        Assert.Throws<ModelBuildException>(() => GraphUpgrade.Upgrade(notOnnx));
        Assert.Throws<ModelLoadException>(() => GraphUpgrade.Upgrade(_temp.Combine("missing")));
    }

    [Theory]
    [InlineData("llama")]
    [InlineData("qwen2")]
    public void A_fresh_build_keeps_the_logits_of_every_prompt_position_the_oracle_computed(string fixture)
    {
        // qwen2 ties the projection to the embedding (Gemm and a reshape back to [batch, kept, vocab]).
        var golden = Golden.Load(TestPaths.Oracle(fixture));
        var folder = _temp.Combine(fixture);
        DecoderModelBuilder.BuildFromHuggingFace(TestPaths.Oracle(fixture), folder, new BuildOptions());
        using var runner = Runner(folder);
        var count = golden.Tokens.Length;
        var logits = runner.StepKeepingLogits(0, new SequenceStep(0, count), golden.Tokens, count).ToArray();
        for (var t = 0; t < count; t++)
            Assert.InRange(Compare.MaxAbsDifference(logits.AsSpan(t * golden.VocabSize, golden.VocabSize), golden.Row(t)), 0, 1e-3f);
    }
}
