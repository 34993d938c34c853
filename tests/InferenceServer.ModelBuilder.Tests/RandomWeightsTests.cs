using System.Runtime.InteropServices;
using InferenceServer.Model;
using InferenceServer.ModelBuilder.Checkpoint;
using InferenceServer.Tests;

namespace InferenceServer.ModelBuilder.Tests;

/// <summary>
/// Models built from a config alone with <see cref="DecoderModelBuilder.BuildRandom"/>: the same
/// seed gives the same bytes, the graphs load and compute, for a Llama shape and for a Qwen2
/// shape with tied embeddings and Llama 3 rope scaling.
/// </summary>
public sealed class RandomWeightsTests : IDisposable
{
    private readonly TempFolder _temp = new();

    public void Dispose() => _temp.Dispose();

    private static readonly HfConfig Llama = new()
    {
        Architecture = "LlamaForCausalLM",
        HiddenSize = 64,
        IntermediateSize = 80, // down_proj's K of 80 leaves a partial int4 block
        NumAttentionHeads = 4,
        NumKeyValueHeads = 2,
        NumHiddenLayers = 2,
        VocabSize = 100,
        HeadDim = 16,
        MaxPositionEmbeddings = 64,
        BosTokenId = 1,
        EosTokenIds = [2],
    };

    private static readonly RopeScaling Llama3Scaling = new("llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositionEmbeddings: 64);

    private static readonly HfConfig Qwen2 = Llama with
    {
        Architecture = "Qwen2ForCausalLM",
        NumKeyValueHeads = 1,
        TieWordEmbeddings = true,
        RopeTheta = 1_000_000,
        RopeScaling = Llama3Scaling,
        EosTokenIds = [2, 3],
        PadTokenId = 0,
    };

    private string Build(HfConfig config, ulong seed, string name, BuildOptions? options = null)
    {
        var folder = _temp.Combine(name);
        DecoderModelBuilder.BuildRandom(config, folder, options ?? new BuildOptions(), seed);
        return folder;
    }

    [Fact]
    public void Same_seed_writes_identical_files()
    {
        var a = Build(Llama, 42, "a");
        var b = Build(Llama, 42, "b");
        Assert.Equal(File.ReadAllBytes(Path.Combine(a, DecoderModelBuilder.DataFileName)), File.ReadAllBytes(Path.Combine(b, DecoderModelBuilder.DataFileName)));
        Assert.Equal(File.ReadAllBytes(Path.Combine(a, DecoderModelBuilder.GraphFileName)), File.ReadAllBytes(Path.Combine(b, DecoderModelBuilder.GraphFileName)));
    }

    [Fact]
    public void Different_seed_writes_different_weights_in_the_same_layout()
    {
        var a = OnnxTestModel.Load(Build(Llama, 42, "a"));
        var b = OnnxTestModel.Load(Build(Llama, 43, "b"));
        Assert.NotEqual(File.ReadAllBytes(a.DataPath), File.ReadAllBytes(b.DataPath));
        Assert.Equal(new FileInfo(a.DataPath).Length, new FileInfo(b.DataPath).Length);
        // Every random tensor changes; norms (all ones) and the rotary caches do not depend on the seed.
        foreach (var name in new[] { "model.embed_tokens.weight", "model.layers.1.mlp.down_proj.weight", "lm_head.weight" })
            Assert.NotEqual(a.Bytes(a.Initializer(name)), b.Bytes(b.Initializer(name)));
        foreach (var name in new[] { "model.norm.weight", "cos_cache", "sin_cache" })
            Assert.Equal(a.Bytes(a.Initializer(name)), b.Bytes(b.Initializer(name)));
    }

    [Fact]
    public void Tensor_values_depend_on_seed_and_name_only()
    {
        // The builder may read tensors in any order (or twice) and get the same values.
        using var weights = new RandomWeights(7);
        var first = weights.Read("model.layers.0.mlp.up_proj.weight", [96, 64]);
        weights.Read("model.layers.0.mlp.gate_proj.weight", [96, 64]);
        Assert.Equal(first, weights.Read("model.layers.0.mlp.up_proj.weight", [96, 64]));
        using var other = new RandomWeights(7);
        Assert.Equal(first, other.Read("model.layers.0.mlp.up_proj.weight", [96, 64]));
        Assert.NotEqual(first, other.Read("model.layers.0.mlp.gate_proj.weight", [96, 64]));

        // Roughly normal with the requested deviation; norm weights are exactly one.
        var mean = first.Average();
        var deviation = Math.Sqrt(first.Average(v => (v - mean) * (v - mean)));
        Assert.InRange(mean, -0.002, 0.002);
        Assert.InRange(deviation, 0.018, 0.022);
        Assert.All(weights.Read("model.layers.0.input_layernorm.weight", [64]), v => Assert.Equal(1f, v));
    }

    [Theory]
    [InlineData(Precision.Fp32)]
    [InlineData(Precision.Int4)]
    public void Llama_random_model_runs_and_gives_finite_logits(Precision precision)
    {
        var folder = Build(Llama, 5, "llama", new BuildOptions { Precision = precision });
        RunAndCheck(folder, Llama.VocabSize);
    }

    [Theory]
    [InlineData(Precision.Fp32)]
    [InlineData(Precision.Int4)]
    public void Qwen2_random_model_with_tied_embeddings_and_llama3_rope_runs(Precision precision)
    {
        var folder = Build(Qwen2, 5, "qwen2", new BuildOptions { Precision = precision });
        var model = OnnxTestModel.Load(folder);
        // Qwen2 always has q/k/v biases: one packed bias per layer.
        Assert.Equal(Qwen2.NumHiddenLayers, model.Graph.Initializer.Count(i => i.Name.EndsWith("qkv_proj.bias", StringComparison.Ordinal)));

        var config = ModelFolder.Load(folder).Config;
        Assert.Equal("qwen2", config.Model.Type);
        Assert.Equal([2, 3], config.Model.EosTokenId);
        Assert.Equal([0], config.Model.PadTokenId);
        Assert.Equal(1, config.Model.Decoder.NumKeyValueHeads);

        RunAndCheck(folder, Qwen2.VocabSize);
    }

    [Fact]
    public void Random_model_with_tied_embeddings_multiplies_by_the_embedding()
    {
        // tie_word_embeddings must give the same graph shape as the real checkpoint would:
        // no lm_head weight, the logits a Gemm with the embedding matrix.
        var model = OnnxTestModel.Load(Build(Qwen2, 5, "qwen2"));
        Assert.DoesNotContain(model.Graph.Initializer, i => i.Name.StartsWith("lm_head", StringComparison.Ordinal));
        Assert.Equal("model.embed_tokens.weight", Assert.Single(model.Nodes("Gemm")).Input[1]);
    }

    [Fact]
    public void Llama3_rope_scaling_reaches_the_rotary_caches()
    {
        // Independent of RopeScaling.Apply: Hugging Face's llama3 rule, written out again.
        // Long wavelengths (> original context / low factor) are divided by the factor, short
        // ones (< original context / high factor) kept, the band between blended.
        var model = OnnxTestModel.Load(Build(Qwen2, 5, "qwen2"));
        var cos = MemoryMarshal.Cast<byte, float>(model.Bytes(model.Initializer("cos_cache"))).ToArray();
        var sin = MemoryMarshal.Cast<byte, float>(model.Bytes(model.Initializer("sin_cache"))).ToArray();
        var half = Qwen2.HeadDim / 2;
        Assert.Equal(Qwen2.MaxPositionEmbeddings * half, cos.Length);

        var s = Llama3Scaling;
        int kept = 0, blended = 0, divided = 0;
        for (var i = 0; i < half; i++)
        {
            var frequency = 1.0 / Math.Pow(Qwen2.RopeTheta, 2.0 * i / Qwen2.HeadDim);
            var wavelength = 2 * Math.PI / frequency;
            double expected;
            if (wavelength < s.OriginalMaxPositionEmbeddings / s.HighFreqFactor)
            {
                expected = frequency;
                kept++;
            }
            else if (wavelength > s.OriginalMaxPositionEmbeddings / s.LowFreqFactor)
            {
                expected = frequency / s.Factor;
                divided++;
            }
            else
            {
                var smooth = (s.OriginalMaxPositionEmbeddings / wavelength - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
                expected = (1 - smooth) * frequency / s.Factor + smooth * frequency;
                blended++;
            }
            for (var p = 0; p < Qwen2.MaxPositionEmbeddings; p++)
            {
                Assert.Equal(Math.Cos(p * expected), cos[p * half + i], 1e-4);
                Assert.Equal(Math.Sin(p * expected), sin[p * half + i], 1e-4);
            }
        }
        // head_dim 16 with theta 1e6 and original context 64 puts frequencies in all three bands.
        Assert.True(kept > 0 && blended > 0 && divided > 0, $"kept {kept}, blended {blended}, divided {divided}");
    }

    [Fact]
    public void Rope_scaling_changes_the_logits()
    {
        // The same weights without scaling give other logits once positions matter.
        var scaled = Build(Qwen2, 5, "scaled");
        var plain = Build(Qwen2 with { RopeScaling = null }, 5, "plain");
        int[] prompt = [1, 17, 42, 9, 88, 23, 5, 61, 30, 77, 12, 54];
        Assert.True(Compare.MaxAbsDifference(LastLogits(scaled, prompt), LastLogits(plain, prompt)) > 1e-6f);
    }

    private static float[] LastLogits(string folder, int[] prompt)
    {
        using var runner = new DecoderRunner(ModelFolder.Load(folder), new RunnerOptions { MaxBatch = 1 });
        return runner.Step(0, [new SequenceStep(0, prompt.Length)], prompt).ToArray();
    }

    // A batch of two fresh prompts, then decode steps; every logit finite and the rows distinct.
    private static void RunAndCheck(string folder, int vocab)
    {
        using var runner = new DecoderRunner(ModelFolder.Load(folder), new RunnerOptions { MaxBatch = 2, MaxSequenceLength = 32 });
        Assert.Equal(vocab, runner.VocabSize);
        int[] tokens = [1, 5, 9, 13, 1, 7];
        var logits = runner.Step(0, [new SequenceStep(0, 4), new SequenceStep(0, 2)], tokens).ToArray();
        AssertFiniteAndVaried(logits, vocab);
        Assert.NotEqual(logits[..vocab], logits[vocab..]);

        int[] lengths = [4, 2];
        for (var step = 0; step < 5; step++)
        {
            int[] next = [Greedy.ArgMax(logits.AsSpan(0, vocab)), Greedy.ArgMax(logits.AsSpan(vocab, vocab))];
            logits = runner.Step(0, [new SequenceStep(lengths[0], 1), new SequenceStep(lengths[1], 1)], next).ToArray();
            AssertFiniteAndVaried(logits, vocab);
            lengths[0]++;
            lengths[1]++;
        }
    }

    private static void AssertFiniteAndVaried(float[] logits, int vocab)
    {
        Assert.Equal(2 * vocab, logits.Length);
        Assert.All(logits, v => Assert.True(float.IsFinite(v), $"logit {v} is not finite"));
        // Not a constant row (all zeros would be finite too).
        Assert.True(logits.Max() - logits.Min() > 1e-6f, "all logits are equal");
    }
}
