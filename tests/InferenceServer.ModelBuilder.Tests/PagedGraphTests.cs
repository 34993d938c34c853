using System.Runtime.InteropServices;
using InferenceServer.Model;
using InferenceServer.ModelBuilder.Onnx;
using InferenceServer.Tests;
using Microsoft.ML.OnnxRuntime;
using DataType = InferenceServer.ModelBuilder.Onnx.TensorProto.Types.DataType;

namespace InferenceServer.ModelBuilder.Tests;

/// <summary>
/// The paged variant (PagedAttention, CUDA): its inputs and outputs, the attention node's wiring,
/// the sampling reductions, bf16 weights, and ONNX Runtime's own validation of the whole graph.
/// Running it needs the CUDA provider; these checks run anywhere.
/// </summary>
public sealed class PagedGraphTests(BuiltModels built) : IClassFixture<BuiltModels>
{
    // Both fixtures: hidden 128, 4 heads, 2 KV heads, head_dim 32, 2 layers, vocab 320.
    private const int Layers = 2, Heads = 4, KvHeads = 2, HeadDim = 32, Vocab = 320, TopK = 64;

    public static TheoryData<string, Precision> AllBuilds => new()
    {
        { "llama", Precision.Fp16 }, { "llama", Precision.Bf16 }, { "qwen2", Precision.Fp16 }, { "qwen2", Precision.Bf16 },
    };

    private OnnxTestModel Load(string fixture, Precision precision) => OnnxTestModel.Load(built.Folder(fixture, precision, GraphVariant.Paged));

    private static DataType ActivationType(Precision precision) => precision == Precision.Bf16 ? DataType.Bfloat16 : DataType.Float16;

    [Theory]
    [MemberData(nameof(AllBuilds))]
    public void Inputs_and_outputs_are_the_paged_contract(string fixture, Precision precision)
    {
        var graph = Load(fixture, precision).Graph;
        var t = ActivationType(precision);
        List<(string, DataType, string[])> inputs =
        [
            ("input_ids", DataType.Int64, ["num_tokens"]),
            ("cumulative_sequence_length", DataType.Int32, ["batch_size_plus_one"]),
            ("past_seqlens", DataType.Int32, ["batch_size"]),
            ("block_table", DataType.Int32, ["batch_size", "max_blocks_per_sequence"]),
            ("attention_metadata", DataType.Int32, ["2"]),
        ];
        List<(string, DataType, string[])> outputs =
        [
            ("next_token", DataType.Int64, ["batch_size"]),
            ("top_logits", DataType.Float, ["batch_size", $"{TopK}"]),
            ("top_ids", DataType.Int64, ["batch_size", $"{TopK}"]),
            ("logsumexp", DataType.Float, ["batch_size"]),
            ("logits", DataType.Float, ["batch_size", $"{Vocab}"]),
        ];
        string[] pool = ["num_blocks", "block_size", $"{KvHeads}", $"{HeadDim}"];
        for (var i = 0; i < Layers; i++)
        {
            inputs.AddRange([($"key_cache.{i}", t, pool), ($"value_cache.{i}", t, pool)]);
            outputs.AddRange([($"key_cache_out.{i}", t, pool), ($"value_cache_out.{i}", t, pool)]);
        }
        Assert.Equal(inputs, graph.Input.Select(v => (v.Name, OnnxTestModel.ElementType(v), OnnxTestModel.Dims(v))), Comparer);
        Assert.Equal(outputs, graph.Output.Select(v => (v.Name, OnnxTestModel.ElementType(v), OnnxTestModel.Dims(v))), Comparer);
    }

    private static readonly IEqualityComparer<(string, DataType, string[])> Comparer = EqualityComparer<(string, DataType, string[])>.Create(
        (a, b) => a.Item1 == b.Item1 && a.Item2 == b.Item2 && a.Item3.SequenceEqual(b.Item3),
        v => v.Item1.GetHashCode(StringComparison.Ordinal));

    [Theory]
    [MemberData(nameof(AllBuilds))]
    public void Each_layer_has_one_PagedAttention_on_its_own_pool_and_no_dense_attention(string fixture, Precision precision)
    {
        var model = Load(fixture, precision);
        Assert.Empty(model.Nodes("GroupQueryAttention"));
        Assert.DoesNotContain(model.Graph.Node, n => n.Input.Contains("attention_mask"));
        var nodes = model.Nodes("PagedAttention");
        Assert.Equal(Layers, nodes.Count);
        for (var layer = 0; layer < Layers; layer++)
        {
            var node = nodes[layer];
            Assert.Equal("com.microsoft", node.Domain);
            Assert.Equal(Heads, OnnxTestModel.Attribute(node, "num_heads"));
            Assert.Equal(KvHeads, OnnxTestModel.Attribute(node, "kv_num_heads"));
            Assert.Equal(1, OnnxTestModel.Attribute(node, "do_rotary"));
            Assert.Equal(0, OnnxTestModel.Attribute(node, "rotary_interleaved"));
            // Packed q/k/v in input 0 (key and value left out), the pool, the sequence metadata,
            // the rotary caches; slot mapping to cache scales (10-15) absent; host-side bounds last.
            var inputs = node.Input.ToArray();
            Assert.Equal(17, inputs.Length);
            Assert.StartsWith($"/model.layers.{layer}/attn/qkv_proj/", inputs[0], StringComparison.Ordinal);
            Assert.Equal(["", ""], inputs[1..3]);
            Assert.Equal([$"key_cache.{layer}", $"value_cache.{layer}", "cumulative_sequence_length", "past_seqlens", "block_table", "cos_cache", "sin_cache"], inputs[3..10]);
            Assert.All(inputs[10..16], i => Assert.Equal("", i));
            Assert.Equal("attention_metadata", inputs[16]);
            Assert.Equal([$"key_cache_out.{layer}", $"value_cache_out.{layer}"], node.Output.Skip(1));
        }
        // The qkv projection is [tokens, (heads + 2 kv heads) * head_dim]: one packed row per token.
        var qkv = model.Initializer("model.layers.0.self_attn.qkv_proj.weight");
        Assert.Equal([128L, (Heads + 2 * KvHeads) * HeadDim], qkv.Dims);
    }

    [Theory]
    [MemberData(nameof(AllBuilds))]
    public void Only_the_last_token_of_each_sequence_reaches_the_vocabulary_projection(string fixture, Precision precision)
    {
        var model = Load(fixture, precision);
        // Gather(rows = cumulative_sequence_length[1:] - 1) on the final norm's output.
        var gather = Assert.Single(model.Graph.Node, n => n.Name == "/sampled/hidden");
        Assert.Equal("Gather", gather.OpType);
        Assert.Equal(0, OnnxTestModel.Attribute(gather, "axis"));
        Assert.Equal("/model/norm/output_0", gather.Input[0]); // the final RMSNorm (fused with the last residual add)
        var slice = Assert.Single(model.Graph.Node, n => n.Name == "/sampled/ends");
        Assert.Equal("cumulative_sequence_length", slice.Input[0]);
        Assert.Equal([1L], MemoryMarshal.Cast<byte, long>(model.Bytes(model.Initializer(slice.Input[1]))).ToArray());
        // The projection's input is that gather (directly, or through nothing else).
        var head = model.Graph.Node.Single(n => n.Name is "/lm_head/MatMul" or "/lm_head/Gemm");
        Assert.Equal(gather.Output[0], head.Input[0]);
    }

    [Theory]
    [MemberData(nameof(AllBuilds))]
    public void Logits_are_reduced_on_the_device_to_argmax_top_k_and_logsumexp(string fixture, Precision precision)
    {
        var model = Load(fixture, precision);
        var cast = Assert.Single(model.Graph.Node, n => n.Output.Contains("logits"));
        Assert.Equal("Cast", cast.OpType);
        Assert.Equal((long)DataType.Float, OnnxTestModel.Attribute(cast, "to"));

        var argmax = Assert.Single(model.Nodes("ArgMax"));
        Assert.Equal(["logits"], argmax.Input);
        Assert.Equal(["next_token"], argmax.Output);
        Assert.Equal(-1, OnnxTestModel.Attribute(argmax, "axis"));
        Assert.Equal(0, OnnxTestModel.Attribute(argmax, "keepdims"));

        var topK = Assert.Single(model.Nodes("TopK"));
        Assert.Equal("logits", topK.Input[0]);
        Assert.Equal([(long)TopK], MemoryMarshal.Cast<byte, long>(model.Bytes(model.Initializer(topK.Input[1]))).ToArray());
        Assert.Equal(["top_logits", "top_ids"], topK.Output);
        Assert.Equal(1, OnnxTestModel.Attribute(topK, "largest"));
        Assert.Equal(1, OnnxTestModel.Attribute(topK, "sorted"));

        var logSumExp = Assert.Single(model.Nodes("ReduceLogSumExp"));
        Assert.Equal("logits", logSumExp.Input[0]);
        Assert.Equal(["logsumexp"], logSumExp.Output);
    }

    [Fact]
    public void Top_k_is_capped_at_the_vocabulary()
    {
        using var temp = new TempFolder();
        var folder = temp.Combine("wide");
        DecoderModelBuilder.BuildFromHuggingFace(TestPaths.Oracle("llama"), folder,
            new BuildOptions { Precision = Precision.Fp16, Variant = GraphVariant.Paged, SamplingTopK = 1000 });
        var model = OnnxTestModel.Load(folder);
        var topK = Assert.Single(model.Nodes("TopK"));
        Assert.Equal([(long)Vocab], MemoryMarshal.Cast<byte, long>(model.Bytes(model.Initializer(topK.Input[1]))).ToArray());
        Assert.Equal(["batch_size", $"{Vocab}"], OnnxTestModel.Dims(model.Graph.Output.Single(o => o.Name == "top_ids")));
    }

    [Fact]
    public void Bf16_weights_are_the_checkpoint_tensors_rounded_to_nearest_even()
    {
        var model = Load("llama", Precision.Bf16);
        Assert.DoesNotContain(model.Graph.Initializer, i => (DataType)i.DataType is DataType.Float or DataType.Float16);
        var checkpoint = SafetensorsTestFile.Read(Path.Combine(TestPaths.Oracle("llama"), "model.safetensors"));
        var original = MemoryMarshal.Cast<byte, float>(checkpoint.Single(t => t.Name == "model.embed_tokens.weight").Data);
        var stored = MemoryMarshal.Cast<byte, ushort>(model.Bytes(model.Initializer("model.embed_tokens.weight")));
        Assert.Equal(original.Length, stored.Length);
        for (var i = 0; i < original.Length; i++)
        {
            // Widening back to float is exact; the stored value is the nearer of the two bf16 neighbours.
            var back = BitConverter.UInt32BitsToSingle((uint)stored[i] << 16);
            Assert.True(MathF.Abs(back - original[i]) <= MathF.Abs(original[i]) / 256f, $"weight {i}: {original[i]} stored as {back}");
        }
    }

    [Theory]
    [InlineData(0x3F800000u, (ushort)0x3F80)] // 1.0
    [InlineData(0x3F808000u, (ushort)0x3F80)] // exactly halfway, even stays
    [InlineData(0x3F818000u, (ushort)0x3F82)] // exactly halfway, odd rounds up to even
    [InlineData(0x3F808001u, (ushort)0x3F81)] // just over halfway
    [InlineData(0xC0490FDBu, (ushort)0xC049)] // -pi
    [InlineData(0x7F800000u, (ushort)0x7F80)] // infinity
    [InlineData(0x7F7FFFFFu, (ushort)0x7F80)] // the largest float rounds to infinity, as IEEE rounding does
    public void BFloat16_conversion_rounds_to_nearest_even(uint floatBits, ushort expected) =>
        Assert.Equal(expected, DecoderGraph.BFloat16Bits([BitConverter.UInt32BitsToSingle(floatBits)])[0]);

    [Fact]
    public void BFloat16_conversion_keeps_NaN_a_NaN()
    {
        // A NaN whose payload sits in the low bits only would round to infinity if truncated blindly.
        var bits = DecoderGraph.BFloat16Bits([BitConverter.UInt32BitsToSingle(0x7F800001u)])[0];
        Assert.True(float.IsNaN(BitConverter.UInt32BitsToSingle((uint)bits << 16)));
    }

    // Loading a model resolves its graph first: every node checked against its operator schema,
    // types and shapes inferred through PagedAttention's own inference. Only then are kernels
    // placed, and the CPU provider has none for this graph: bf16 has no CPU kernels at all, and
    // for fp16 ORT casts the CPU-only nodes to float, which PagedAttention (fp16/bf16 only) refuses.
    // Either complaint comes after the graph resolved; a graph that breaks a schema fails before.
    private static string LoadError(string modelPath)
    {
        using var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL };
        return Assert.Throws<OnnxRuntimeException>(() => new InferenceSession(modelPath, options).Dispose()).Message;
    }

    [Theory]
    [MemberData(nameof(AllBuilds))]
    public void Onnx_runtime_resolves_the_graph_and_fails_only_at_placing_kernels_on_the_CPU(string fixture, Precision precision)
    {
        var message = LoadError(Path.Combine(built.Folder(fixture, precision, GraphVariant.Paged), "model.onnx"));
        if (precision == Precision.Bf16)
            Assert.StartsWith("[ErrorCode:NotImplemented] Could not find an implementation for", message, StringComparison.Ordinal);
        else
            Assert.Matches(@"Type 'tensor\(float\)' of input parameter \(InsertedPrecisionFreeCast_[^)]*\) of operator \(PagedAttention\)", message);
        Assert.DoesNotContain("ShapeInferenceError", message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_paged_graph_that_breaks_the_operator_schema_fails_at_resolve()
    {
        // The check above can tell: the same graph with kv_num_heads that does not divide the
        // packed q/k/v width fails PagedAttention's shape inference, before any kernel lookup.
        using var temp = new TempFolder();
        var source = built.Folder("llama", Precision.Bf16, GraphVariant.Paged);
        foreach (var file in Directory.GetFiles(source))
            File.Copy(file, temp.Combine(Path.GetFileName(file)));
        var model = OnnxTestModel.Load(temp.Path).Model;
        model.Graph.Node.First(n => n.OpType == "PagedAttention").Attribute.Single(a => a.Name == "kv_num_heads").I = 3;
        File.WriteAllBytes(temp.Combine("model.onnx"), Google.Protobuf.MessageExtensions.ToByteArray(model));

        var message = LoadError(temp.Combine("model.onnx"));
        Assert.Contains("ShapeInferenceError", message, StringComparison.Ordinal);
        Assert.Contains("divisible by (num_heads + 2 * kv_num_heads)", message, StringComparison.Ordinal);
    }

    [Theory]
    [MemberData(nameof(AllBuilds))]
    public void Genai_config_names_the_paged_inputs_and_outputs(string fixture, Precision precision)
    {
        var path = Path.Combine(built.Folder(fixture, precision, GraphVariant.Paged), "genai_config.json");
        var config = GenaiConfig.Parse(File.ReadAllText(path), path);
        var decoder = config.Model.Decoder;
        Assert.True(decoder.IsPaged);
        Assert.Null(decoder.Inputs.AttentionMask);
        Assert.Equal(("cumulative_sequence_length", "past_seqlens", "block_table", "attention_metadata"),
            (decoder.Inputs.CumulativeSequenceLength, decoder.Inputs.PastSequenceLengths, decoder.Inputs.BlockTable, decoder.Inputs.AttentionMetadata));
        Assert.Equal(("key_cache.%d", "value_cache.%d"), (decoder.Inputs.PastKeyNames, decoder.Inputs.PastValueNames));
        Assert.Equal(("key_cache_out.%d", "value_cache_out.%d"), (decoder.Outputs.PresentKeyNames, decoder.Outputs.PresentValueNames));
        Assert.Equal(("next_token", "top_logits", "top_ids", "logsumexp"),
            (decoder.Outputs.NextToken, decoder.Outputs.TopLogits, decoder.Outputs.TopIds, decoder.Outputs.LogSumExp));
    }

    [Fact]
    public void The_dense_runner_refuses_a_paged_folder_with_a_reason()
    {
        var folder = ModelFolder.Load(built.Folder("llama", Precision.Fp16, GraphVariant.Paged));
        var error = Assert.Throws<ModelLoadException>(() => new DecoderRunner(folder, new RunnerOptions()).Dispose());
        Assert.Contains("paged graph", error.Message, StringComparison.Ordinal);
        Assert.Contains("--graph dense", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(Precision.Fp32, GraphVariant.Paged, "fp16 or bf16")]
    [InlineData(Precision.Int4, GraphVariant.Paged, "fp16 or bf16")]
    [InlineData(Precision.Bf16, GraphVariant.Dense, "bf16 is for the paged graph")]
    public void Unsupported_precision_and_graph_pairs_are_refused(Precision precision, GraphVariant variant, string reason)
    {
        using var temp = new TempFolder();
        var error = Assert.Throws<ModelBuildException>(() => DecoderModelBuilder.BuildFromHuggingFace(
            TestPaths.Oracle("llama"), temp.Combine("out"), new BuildOptions { Precision = precision, Variant = variant }));
        Assert.Contains(reason, error.Message, StringComparison.Ordinal);
        Assert.False(Directory.Exists(temp.Combine("out")));
    }

    [Fact]
    public void Paged_graph_with_logits_for_every_position_is_refused()
    {
        using var temp = new TempFolder();
        var error = Assert.Throws<ModelBuildException>(() => DecoderModelBuilder.BuildFromHuggingFace(TestPaths.Oracle("llama"), temp.Combine("out"),
            new BuildOptions { Precision = Precision.Fp16, Variant = GraphVariant.Paged, LogitsForAllPositions = true }));
        Assert.Contains("last token", error.Message, StringComparison.Ordinal);
    }
}
