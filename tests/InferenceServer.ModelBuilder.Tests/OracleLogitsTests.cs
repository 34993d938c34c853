using InferenceServer.Model;
using InferenceServer.Tests;

namespace InferenceServer.ModelBuilder.Tests;

/// <summary>
/// A converted model's logits against an independent PyTorch computation of the same weights
/// (tests/fixtures/oracle/make_golden.py): Llama with fp32 and bf16 checkpoints, and Qwen2 with
/// q/k/v biases, tied embeddings, fp16 weights and two shards.
/// </summary>
public sealed class OracleLogitsTests
{
    private const float Tolerance = 1e-3f;

    public static TheoryData<string> Fixtures => ["llama", "llama-bf16", "qwen2"];

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void Prefill_of_the_whole_sequence_matches_the_last_position(string fixture)
    {
        using var temp = new TempFolder();
        var golden = Golden.Load(TestPaths.Oracle(fixture));
        using var runner = Build(fixture, temp);

        var logits = runner.Step(0, [new SequenceStep(0, golden.Tokens.Length)], golden.Tokens);
        Assert.InRange(Compare.MaxAbsDifference(logits, golden.Row(golden.Tokens.Length - 1)), 0, Tolerance);
    }

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void Token_by_token_decoding_matches_every_position(string fixture)
    {
        using var temp = new TempFolder();
        var golden = Golden.Load(TestPaths.Oracle(fixture));
        using var runner = Build(fixture, temp);

        for (var t = 0; t < golden.Tokens.Length; t++)
        {
            var logits = runner.Step(0, [new SequenceStep(t, 1)], golden.Tokens.AsSpan(t, 1));
            var difference = Compare.MaxAbsDifference(logits, golden.Row(t));
            Assert.True(difference <= Tolerance, $"position {t}: max abs difference {difference}");
        }
    }

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void Two_sequences_of_different_lengths_in_one_batch_match_the_oracle(string fixture)
    {
        using var temp = new TempFolder();
        var golden = Golden.Load(TestPaths.Oracle(fixture));
        using var runner = Build(fixture, temp);

        int[] tokens = [.. golden.TokensShort, .. golden.Tokens];
        var logits = runner.Step(0, [new SequenceStep(0, golden.TokensShort.Length), new SequenceStep(0, golden.Tokens.Length)], tokens);
        var vocab = runner.VocabSize;
        Assert.InRange(Compare.MaxAbsDifference(logits[..vocab], golden.ShortRow(golden.TokensShort.Length - 1)), 0, Tolerance);
        Assert.InRange(Compare.MaxAbsDifference(logits[vocab..(2 * vocab)], golden.Row(golden.Tokens.Length - 1)), 0, Tolerance);
    }

    [Fact]
    public void Int4_graph_computes_with_the_weights_its_quantization_stands_for()
    {
        // MatMulNBits over the 4-bit codes must give what a float graph gives with the
        // dequantized weights: that checks the code, scale and zero-point layout end to end.
        using var temp = new TempFolder();
        var golden = Golden.Load(TestPaths.Oracle("llama"));
        var config = HfConfig.Load(Path.Combine(TestPaths.Oracle("llama"), "config.json"));
        DecoderModelBuilder.BuildFromHuggingFace(TestPaths.Oracle("llama"), temp.Combine("int4"), new BuildOptions { Precision = Precision.Int4, Int4AccuracyLevel = 1 });
        using (var checkpoint = new Checkpoint.HfCheckpoint(TestPaths.Oracle("llama")))
        using (var dequantized = new DequantizedLinearWeights(checkpoint, new Quantization.Int4Quantizer(32)))
            DecoderModelBuilder.Build(config, dequantized, temp.Combine("reference"), new BuildOptions(), null);

        using var int4 = new DecoderRunner(ModelFolder.Load(temp.Combine("int4")), new RunnerOptions { MaxBatch = 1, MaxSequenceLength = 64 });
        using var reference = new DecoderRunner(ModelFolder.Load(temp.Combine("reference")), new RunnerOptions { MaxBatch = 1, MaxSequenceLength = 64 });
        var quantized = int4.Step(0, [new SequenceStep(0, golden.Tokens.Length)], golden.Tokens).ToArray();
        var expected = reference.Step(0, [new SequenceStep(0, golden.Tokens.Length)], golden.Tokens);
        Assert.InRange(Compare.MaxAbsDifference(quantized, expected), 0, Tolerance);
        Assert.Equal(Greedy.ArgMax(expected), Greedy.ArgMax(quantized));
    }

    /// <summary>The checkpoint with every linear weight replaced by its int4 round trip.</summary>
    private sealed class DequantizedLinearWeights(Checkpoint.IWeightSource inner, Quantization.Int4Quantizer quantizer) : Checkpoint.IWeightSource
    {
        public bool Contains(string name) => inner.Contains(name);

        public float[] Read(string name, ReadOnlySpan<long> expectedShape)
        {
            var values = inner.Read(name, expectedShape);
            if (!name.EndsWith("_proj.weight", StringComparison.Ordinal) && name != "lm_head.weight")
                return values;
            var (n, k) = ((int)expectedShape[0], (int)expectedShape[1]);
            return quantizer.Dequantize(quantizer.Quantize(values, n, k));
        }

        public void Dispose() { }
    }

    private static DecoderRunner Build(string fixture, TempFolder temp)
    {
        var output = temp.Combine("model");
        DecoderModelBuilder.BuildFromHuggingFace(TestPaths.Oracle(fixture), output, new BuildOptions());
        return new DecoderRunner(ModelFolder.Load(output), new RunnerOptions { MaxBatch = 2, MaxSequenceLength = 64 });
    }
}
