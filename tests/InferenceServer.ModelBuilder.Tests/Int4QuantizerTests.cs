using InferenceServer.Model;
using InferenceServer.ModelBuilder.Checkpoint;
using InferenceServer.ModelBuilder.Quantization;
using InferenceServer.Tests;

namespace InferenceServer.ModelBuilder.Tests;

/// <summary>
/// Block-wise 4-bit quantization: each block's 16 levels span its range (and zero), so the round
/// trip is off by at most half a level; zeros, and the padding of a partial last block, are exact.
/// </summary>
public sealed class Int4QuantizerTests
{
    // Float rounding in w / scale and (q - z) * scale, relative to the step.
    private const float RelativeSlack = 1e-5f;

    private static float[] RandomWeights(int n, int k, int seed, float scale = 1f)
    {
        var random = new Random(seed);
        var values = new float[n * k];
        for (var i = 0; i < values.Length; i++)
            values[i] = (float)(random.NextDouble() * 2 - 1) * scale;
        return values;
    }

    [Theory]
    [InlineData(8, 64, 32)]    // whole blocks
    [InlineData(8, 96, 32)]    // an odd number of blocks: the last zero-point byte is half used
    [InlineData(5, 40, 32)]    // K not a multiple of the block size: a partial last block
    [InlineData(3, 7, 16)]     // K smaller than one block
    [InlineData(4, 300, 128)]
    [InlineData(2, 64, 64)]
    public void Round_trip_error_is_at_most_half_a_step(int n, int k, int blockSize)
    {
        var quantizer = new Int4Quantizer(blockSize);
        var weight = RandomWeights(n, k, seed: n * 1000 + k);
        var q = quantizer.Quantize(weight, n, k);
        var blocks = (k + blockSize - 1) / blockSize;
        Assert.Equal(blocks, q.BlocksPerRow);
        Assert.Equal(n * blocks * blockSize / 2, q.Codes.Length);
        Assert.Equal(n * blocks, q.Scales.Length);
        Assert.Equal(n * ((blocks + 1) / 2), q.ZeroPoints.Length);

        var restored = quantizer.Dequantize(q);
        Assert.Equal(weight.Length, restored.Length);
        for (var row = 0; row < n; row++)
        {
            for (var i = 0; i < k; i++)
            {
                var scale = q.Scales[row * blocks + i / blockSize];
                var error = Math.Abs(restored[row * k + i] - weight[row * k + i]);
                Assert.True(error <= scale / 2 * (1 + RelativeSlack) + 1e-7f,
                    $"row {row}, column {i}: {weight[row * k + i]} came back as {restored[row * k + i]} (step {scale})");
            }
        }
    }

    [Fact]
    public void Step_is_the_block_range_including_zero_over_15()
    {
        // The tightest grid that holds the block and zero: (max(0, max) - min(0, min)) / 15.
        var quantizer = new Int4Quantizer(16);
        float[] weight = [.. Enumerable.Range(0, 16).Select(i => 0.5f + i * 0.1f), .. Enumerable.Range(0, 16).Select(i => -3f + i * 0.1f)];
        var q = quantizer.Quantize(weight, 1, 32);
        Assert.Equal((2.0f - 0f) / 15, q.Scales[0], 1e-6f);
        Assert.Equal((0f - -3f) / 15, q.Scales[1], 1e-6f);
        // Zero points: the all-positive block has zero at code 0, the all-negative one at 15.
        Assert.Equal(0x0F << 4 | 0x00, q.ZeroPoints[0]);
    }

    [Fact]
    public void Exact_zeros_stay_exact()
    {
        var quantizer = new Int4Quantizer(32);
        const int n = 6, k = 70;
        var weight = RandomWeights(n, k, seed: 3, scale: 0.05f);
        for (var i = 0; i < weight.Length; i += 3)
            weight[i] = 0;
        // A whole row of zeros, and a block of zeros inside a row.
        weight.AsSpan(2 * k, k).Clear();
        weight.AsSpan(4 * k + 32, 32).Clear();

        var restored = quantizer.Dequantize(quantizer.Quantize(weight, n, k));
        for (var i = 0; i < weight.Length; i++)
        {
            if (weight[i] == 0)
                Assert.Equal(0f, restored[i]);
        }
    }

    [Fact]
    public void Padding_of_a_partial_block_is_the_zero_point()
    {
        // MatMulNBits reads whole blocks: the codes past K must dequantize to exactly 0.
        var quantizer = new Int4Quantizer(32);
        const int n = 3, k = 40;
        var q = quantizer.Quantize(RandomWeights(n, k, seed: 11), n, k);
        for (var row = 0; row < n; row++)
        {
            var zero = q.ZeroPoints[row] >> 4; // block 1 is the high nibble of the row's only byte
            var blob = (row * 2 + 1) * 16;
            for (var i = k - 32; i < 32; i++)
            {
                var code = q.Codes[blob + i / 2];
                Assert.Equal(zero, i % 2 == 0 ? code & 0xF : code >> 4);
            }
        }
    }

    [Fact]
    public void Constant_and_all_zero_blocks_round_trip()
    {
        // A block of zeros has no range: it must not divide by a zero step.
        var quantizer = new Int4Quantizer(16);
        float[] weight = [.. Enumerable.Repeat(0.25f, 16), .. Enumerable.Repeat(-1.5f, 16), .. new float[16]];
        var q = quantizer.Quantize(weight, 3, 16);
        Assert.All(q.Scales, s => Assert.True(float.IsFinite(s) && s > 0, $"step {s}"));
        var restored = quantizer.Dequantize(q);
        for (var i = 0; i < weight.Length; i++)
            Assert.Equal(weight[i], restored[i], 1e-6f);
        Assert.All(restored[32..], v => Assert.Equal(0f, v));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-32)]
    [InlineData(8)]
    [InlineData(15)]
    [InlineData(24)]
    [InlineData(48)]
    [InlineData(100)]
    public void Block_size_that_is_not_a_power_of_two_of_at_least_16_is_refused(int blockSize)
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new Int4Quantizer(blockSize));
        Assert.Equal("blockSize", e.ParamName);
    }

    [Theory]
    [InlineData(16)]
    [InlineData(32)]
    [InlineData(64)]
    [InlineData(256)]
    public void Power_of_two_block_sizes_are_accepted(int blockSize) =>
        Assert.Equal(blockSize, new Int4Quantizer(blockSize).BlockSize);

    [Fact]
    public void Weight_of_the_wrong_length_is_refused()
    {
        var e = Assert.Throws<ArgumentException>(() => new Int4Quantizer().Quantize(new float[10], 3, 4));
        Assert.Contains("10 values, expected 3 x 4", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(32)]
    [InlineData(16)]
    [InlineData(64)]
    public void Int4_graph_with_partial_blocks_computes_with_its_dequantized_weights(int blockSize)
    {
        // K of 80 (down_proj) and 48 (q/k/v, o_proj, gate/up) are not multiples of 32 or 64:
        // MatMulNBits must read the padded layout as the quantizer wrote it.
        var config = new HfConfig
        {
            Architecture = "LlamaForCausalLM",
            HiddenSize = 48,
            IntermediateSize = 80,
            NumAttentionHeads = 3,
            NumKeyValueHeads = 1,
            NumHiddenLayers = 1,
            VocabSize = 64,
            HeadDim = 16,
            MaxPositionEmbeddings = 32,
        };
        using var temp = new TempFolder();
        // Weights ten times Hugging Face's initial scale, so that a misread block shows in the logits.
        using (var weights = new RandomWeights(9, standardDeviation: 0.2f))
            DecoderModelBuilder.Build(config, weights, temp.Combine("int4"), new BuildOptions { Precision = Precision.Int4, Int4BlockSize = blockSize, Int4AccuracyLevel = 1 }, null);
        using (var weights = new DequantizedLinearWeights(new RandomWeights(9, standardDeviation: 0.2f), new Int4Quantizer(blockSize)))
            DecoderModelBuilder.Build(config, weights, temp.Combine("reference"), new BuildOptions(), null);

        var graph = OnnxTestModel.Load(temp.Combine("int4"));
        Assert.All(graph.Nodes("MatMulNBits"), node => Assert.Equal(blockSize, OnnxTestModel.Attribute(node, "block_size")));

        int[] prompt = [1, 2, 3, 4, 5, 6, 7];
        using var int4 = new DecoderRunner(ModelFolder.Load(temp.Combine("int4")), new RunnerOptions { MaxBatch = 1 });
        using var reference = new DecoderRunner(ModelFolder.Load(temp.Combine("reference")), new RunnerOptions { MaxBatch = 1 });
        var quantized = int4.Step(0, [new SequenceStep(0, prompt.Length)], prompt).ToArray();
        var expected = reference.Step(0, [new SequenceStep(0, prompt.Length)], prompt);
        Assert.InRange(Compare.MaxAbsDifference(quantized, expected), 0, 1e-4f);
    }

    /// <summary>A weight source with every linear weight replaced by its int4 round trip.</summary>
    private sealed class DequantizedLinearWeights(IWeightSource inner, Int4Quantizer quantizer) : IWeightSource
    {
        public bool Contains(string name) => inner.Contains(name);

        public float[] Read(string name, ReadOnlySpan<long> expectedShape)
        {
            var values = inner.Read(name, expectedShape);
            if (expectedShape.Length != 2 || name == "model.embed_tokens.weight")
                return values;
            return quantizer.Dequantize(quantizer.Quantize(values, (int)expectedShape[0], (int)expectedShape[1]));
        }

        public void Dispose() => inner.Dispose();
    }
}
