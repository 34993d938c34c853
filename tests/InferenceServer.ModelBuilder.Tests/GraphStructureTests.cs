using System.Runtime.InteropServices;
using System.Text.Json;
using InferenceServer.Model;
using InferenceServer.ModelBuilder.Onnx;
using InferenceServer.Tests;
using DataType = InferenceServer.ModelBuilder.Onnx.TensorProto.Types.DataType;

namespace InferenceServer.ModelBuilder.Tests;

/// <summary>The oracle fixtures converted once per precision and graph variant, shared by the tests of a class.</summary>
public sealed class BuiltModels : IDisposable
{
    private readonly TempFolder _temp = new();
    private readonly Dictionary<(string Fixture, Precision Precision, GraphVariant Variant), string> _folders = [];
    private readonly Lock _lock = new();

    public string Folder(string fixture, Precision precision, GraphVariant variant = GraphVariant.Dense)
    {
        lock (_lock)
        {
            if (!_folders.TryGetValue((fixture, precision, variant), out var folder))
            {
                folder = _temp.Combine($"{fixture}-{precision}-{variant}");
                DecoderModelBuilder.BuildFromHuggingFace(TestPaths.Oracle(fixture), folder, new BuildOptions { Precision = precision, Variant = variant });
                _folders.Add((fixture, precision, variant), folder);
            }
            return folder;
        }
    }

    public void Dispose() => _temp.Dispose();
}

/// <summary>
/// What the written model.onnx holds, read back with the protobuf classes: the contract's inputs
/// and outputs, the operators per layer, where the weights are stored, and a genai_config.json
/// that agrees with all of it. Both fixtures: llama (untied lm_head) and qwen2 (tied, q/k/v biases).
/// </summary>
public sealed class GraphStructureTests(BuiltModels models) : IClassFixture<BuiltModels>
{
    // Both fixtures: hidden 128, intermediate 256, 4 heads, 2 KV heads, head_dim 32, 2 layers, vocab 320, context 256.
    private const int Layers = 2, Heads = 4, KvHeads = 2, HeadDim = 32, Hidden = 128, Intermediate = 256, Vocab = 320, Context = 256;

    public static TheoryData<string, Precision> AllBuilds => new()
    {
        { "llama", Precision.Fp32 }, { "llama", Precision.Fp16 }, { "llama", Precision.Int4 },
        { "qwen2", Precision.Fp32 }, { "qwen2", Precision.Fp16 }, { "qwen2", Precision.Int4 },
    };

    public static TheoryData<string> Fixtures => ["llama", "qwen2"];

    private OnnxTestModel Load(string fixture, Precision precision) => OnnxTestModel.Load(models.Folder(fixture, precision));

    [Theory]
    [MemberData(nameof(AllBuilds))]
    public void Model_is_ir_version_10_with_opsets_21_and_com_microsoft_1(string fixture, Precision precision)
    {
        var model = Load(fixture, precision).Model;
        Assert.Equal(10, model.IrVersion);
        var opsets = model.OpsetImport.Select(o => (o.Domain, o.Version)).Order().ToArray();
        Assert.Equal([("", 21L), ("com.microsoft", 1L)], opsets);
        // Every node's domain is one the model imports.
        Assert.All(model.Graph.Node, n => Assert.Contains(n.Domain, new[] { "", "com.microsoft" }));
    }

    [Theory]
    [MemberData(nameof(AllBuilds))]
    public void Inputs_and_outputs_are_exactly_the_contract_names(string fixture, Precision precision)
    {
        var graph = Load(fixture, precision).Graph;
        List<string> inputs = ["input_ids", "attention_mask"];
        List<string> outputs = ["logits"];
        for (var i = 0; i < Layers; i++)
        {
            inputs.AddRange([$"past_key_values.{i}.key", $"past_key_values.{i}.value"]);
            outputs.AddRange([$"present.{i}.key", $"present.{i}.value"]);
        }
        inputs.Add("logits_to_keep"); // optional: it has a default
        Assert.Equal(inputs, graph.Input.Select(v => v.Name));
        Assert.Equal(outputs, graph.Output.Select(v => v.Name));
    }

    [Theory]
    [MemberData(nameof(AllBuilds))]
    public void Element_types_and_shapes_follow_the_precision(string fixture, Precision precision)
    {
        var graph = Load(fixture, precision).Graph;
        var kvType = precision == Precision.Fp16 ? DataType.Float16 : DataType.Float;
        var input = graph.Input.ToDictionary(v => v.Name);
        var output = graph.Output.ToDictionary(v => v.Name);

        Assert.Equal(DataType.Int64, OnnxTestModel.ElementType(input["input_ids"]));
        Assert.Equal(["batch_size", "sequence_length"], OnnxTestModel.Dims(input["input_ids"]));
        Assert.Equal(DataType.Int64, OnnxTestModel.ElementType(input["attention_mask"]));
        Assert.Equal(["batch_size", "total_sequence_length"], OnnxTestModel.Dims(input["attention_mask"]));
        for (var i = 0; i < Layers; i++)
        {
            foreach (var past in new[] { input[$"past_key_values.{i}.key"], input[$"past_key_values.{i}.value"] })
            {
                Assert.Equal(kvType, OnnxTestModel.ElementType(past));
                Assert.Equal(["batch_size", $"{KvHeads}", "past_sequence_length", $"{HeadDim}"], OnnxTestModel.Dims(past));
            }
            foreach (var present in new[] { output[$"present.{i}.key"], output[$"present.{i}.value"] })
            {
                Assert.Equal(kvType, OnnxTestModel.ElementType(present));
                Assert.Equal(["batch_size", $"{KvHeads}", "present_sequence_length", $"{HeadDim}"], OnnxTestModel.Dims(present));
            }
        }
        // Logits are float32 whatever the precision; each row's last logits_to_keep positions,
        // an int64 scalar input whose default (an initializer of the same name) is 1, and declared
        // with the shape of that default.
        Assert.Equal(DataType.Float, OnnxTestModel.ElementType(output["logits"]));
        Assert.Equal(["batch_size", "1", $"{Vocab}"], OnnxTestModel.Dims(output["logits"]));
        Assert.Equal(DataType.Int64, OnnxTestModel.ElementType(input["logits_to_keep"]));
        Assert.Empty(OnnxTestModel.Dims(input["logits_to_keep"]));
        var keep = graph.Initializer.Single(t => t.Name == "logits_to_keep");
        Assert.Empty(keep.Dims);
        Assert.Equal(1L, BitConverter.ToInt64(keep.RawData.Span));
    }

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void Fp16_graph_stores_float_weights_as_float16_and_casts_the_logits(string fixture)
    {
        var model = Load(fixture, Precision.Fp16);
        var types = model.Graph.Initializer.Select(i => (DataType)i.DataType).Distinct().ToArray();
        Assert.DoesNotContain(DataType.Float, types);
        Assert.Equal(DataType.Float16, (DataType)model.Initializer("model.embed_tokens.weight").DataType);
        Assert.Equal(DataType.Float16, (DataType)model.Initializer("cos_cache").DataType);
        Assert.Equal(DataType.Float16, (DataType)model.Initializer("model.norm.weight").DataType);
        var cast = Assert.Single(model.Graph.Node, n => n.Output.Contains("logits"));
        Assert.Equal("Cast", cast.OpType);
        Assert.Equal((long)DataType.Float, OnnxTestModel.Attribute(cast, "to"));
    }

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void Fp32_graph_has_no_float16_tensors(string fixture)
    {
        var model = Load(fixture, Precision.Fp32);
        Assert.DoesNotContain(model.Graph.Initializer, i => (DataType)i.DataType == DataType.Float16);
        Assert.Equal("Identity", Assert.Single(model.Graph.Node, n => n.Output.Contains("logits")).OpType);
    }

    [Theory]
    [MemberData(nameof(AllBuilds))]
    public void Each_layer_has_one_GroupQueryAttention_on_its_own_cache(string fixture, Precision precision)
    {
        var attention = Load(fixture, precision).Nodes("GroupQueryAttention");
        Assert.Equal(Layers, attention.Count);
        for (var i = 0; i < Layers; i++)
        {
            var node = attention[i];
            Assert.Equal("com.microsoft", node.Domain);
            Assert.Equal(Heads, OnnxTestModel.Attribute(node, "num_heads"));
            Assert.Equal(KvHeads, OnnxTestModel.Attribute(node, "kv_num_heads"));
            Assert.Equal(1, OnnxTestModel.Attribute(node, "do_rotary"));
            Assert.Equal(0, OnnxTestModel.Attribute(node, "rotary_interleaved"));
            // Inputs 3 and 4 are the past, outputs 1 and 2 the present, of this layer only.
            Assert.Equal($"past_key_values.{i}.key", node.Input[3]);
            Assert.Equal($"past_key_values.{i}.value", node.Input[4]);
            Assert.Equal($"present.{i}.key", node.Output[1]);
            Assert.Equal($"present.{i}.value", node.Output[2]);
            Assert.Equal(["cos_cache", "sin_cache"], node.Input.Skip(7).Take(2));
        }
    }

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void Int4_graph_replaces_every_linear_weight_with_MatMulNBits(string fixture)
    {
        var model = Load(fixture, Precision.Int4);
        var tied = fixture == "qwen2";
        // q/k/v and gate/up are packed into one projection each: 4 per layer, plus lm_head unless
        // it is tied to the embedding (then a Gemm with the embedding matrix).
        var expected = new Dictionary<string, (long K, long N)>();
        for (var i = 0; i < Layers; i++)
        {
            expected[$"/model.layers.{i}/attn/qkv_proj/MatMulNBits"] = (Hidden, (Heads + 2 * KvHeads) * HeadDim);
            expected[$"/model.layers.{i}/attn/o_proj/MatMulNBits"] = (Heads * HeadDim, Hidden);
            expected[$"/model.layers.{i}/mlp/gate_up_proj/MatMulNBits"] = (Hidden, 2 * Intermediate);
            expected[$"/model.layers.{i}/mlp/down_proj/MatMulNBits"] = (Intermediate, Hidden);
        }
        if (!tied)
            expected["/lm_head/MatMulNBits"] = (Hidden, Vocab);

        var nodes = model.Nodes("MatMulNBits");
        Assert.Equal(expected.Keys.Order(), nodes.Select(n => n.Name).Order());
        foreach (var node in nodes)
        {
            var (k, n) = (OnnxTestModel.Attribute(node, "K"), OnnxTestModel.Attribute(node, "N"));
            Assert.Equal(expected[node.Name], (k, n));
            Assert.Equal(4, OnnxTestModel.Attribute(node, "bits"));
            var block = OnnxTestModel.Attribute(node, "block_size");
            Assert.Equal(32, block);
            var blocks = (k + block - 1) / block;

            // Codes [N, blocks, block/2] bytes, scales [N * blocks] floats, zero points two per byte.
            var codes = model.Initializer(node.Input[1]);
            Assert.Equal(DataType.Uint8, (DataType)codes.DataType);
            Assert.Equal([n, blocks, block / 2], codes.Dims);
            var scales = model.Initializer(node.Input[2]);
            Assert.Equal(DataType.Float, (DataType)scales.DataType);
            Assert.Equal([n * blocks], scales.Dims);
            var zeros = model.Initializer(node.Input[3]);
            Assert.Equal(DataType.Uint8, (DataType)zeros.DataType);
            Assert.Equal([n * ((blocks + 1) / 2)], zeros.Dims);
        }

        // No float linear weight is left behind.
        Assert.Empty(model.Nodes("MatMul"));
        Assert.DoesNotContain(model.Graph.Initializer, i => i.Name.EndsWith("_proj.weight", StringComparison.Ordinal) || i.Name == "lm_head.weight");
        Assert.Equal(tied ? 1 : 0, model.Nodes("Gemm").Count);
    }

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void Float_graph_has_one_MatMul_per_linear_weight(string fixture)
    {
        var model = Load(fixture, Precision.Fp32);
        var tied = fixture == "qwen2";
        Assert.Equal(4 * Layers + (tied ? 0 : 1), model.Nodes("MatMul").Count);
        Assert.Empty(model.Nodes("MatMulNBits"));
        // Only the biased projections (Qwen2's packed q/k/v) add a bias.
        Assert.Equal(tied ? Layers : 0, model.Graph.Node.Count(n => n.OpType == "Add" && n.Name.EndsWith("qkv_proj/Add", StringComparison.Ordinal)));
    }

    [Theory]
    [MemberData(nameof(AllBuilds))]
    public void Initializers_over_1_KB_are_external_and_64_byte_aligned(string fixture, Precision precision)
    {
        var model = Load(fixture, precision);
        var dataLength = new FileInfo(model.DataPath).Length;
        var ranges = new List<(long Offset, long Length)>();
        foreach (var tensor in model.Graph.Initializer)
        {
            var bytes = tensor.Dims.Aggregate(1L, (a, b) => a * b) * OnnxTestModel.ElementSize((DataType)tensor.DataType);
            if (bytes > 1024)
            {
                Assert.True(tensor.DataLocation == TensorProto.Types.DataLocation.External, $"{tensor.Name} ({bytes} bytes) is inline");
                Assert.True(tensor.RawData.IsEmpty, $"{tensor.Name} also has inline data");
                Assert.Equal(DecoderModelBuilder.DataFileName, OnnxTestModel.External(tensor, "location"));
                var offset = long.Parse(OnnxTestModel.External(tensor, "offset"), System.Globalization.CultureInfo.InvariantCulture);
                var length = long.Parse(OnnxTestModel.External(tensor, "length"), System.Globalization.CultureInfo.InvariantCulture);
                Assert.Equal(0, offset % 64);
                Assert.Equal(bytes, length);
                Assert.True(offset + length <= dataLength, $"{tensor.Name} ends at {offset + length}, past the {dataLength}-byte data file");
                ranges.Add((offset, length));
            }
            else
            {
                Assert.Equal(TensorProto.Types.DataLocation.Default, tensor.DataLocation);
                Assert.Equal(bytes, tensor.RawData.Length);
            }
        }
        Assert.NotEmpty(ranges);
        // No two tensors share bytes.
        var sorted = ranges.OrderBy(r => r.Offset).ToList();
        for (var i = 1; i < sorted.Count; i++)
            Assert.True(sorted[i - 1].Offset + sorted[i - 1].Length <= sorted[i].Offset, $"tensors at {sorted[i - 1].Offset} and {sorted[i].Offset} overlap");
    }

    [Fact]
    public void Stored_weights_are_the_checkpoint_tensors_with_linear_weights_transposed()
    {
        var model = Load("llama", Precision.Fp32);
        var checkpoint = SafetensorsTestFile.Read(Path.Combine(TestPaths.Oracle("llama"), "model.safetensors")).ToDictionary(t => t.Name);

        // The embedding is stored as it is, byte for byte.
        Assert.Equal(checkpoint["model.embed_tokens.weight"].Data, model.Bytes(model.Initializer("model.embed_tokens.weight")));

        // lm_head [vocab, hidden] becomes the MatMul's right operand [hidden, vocab].
        var lmHead = model.Initializer("lm_head.weight");
        Assert.Equal([Hidden, Vocab], lmHead.Dims);
        var stored = MemoryMarshal.Cast<byte, float>(model.Bytes(lmHead));
        var original = MemoryMarshal.Cast<byte, float>(checkpoint["lm_head.weight"].Data);
        for (var row = 0; row < Vocab; row++)
        {
            for (var col = 0; col < Hidden; col++)
                Assert.Equal(original[row * Hidden + col], stored[col * Vocab + row]);
        }
    }

    [Fact]
    public void Fp16_weights_are_the_checkpoint_tensors_rounded_to_half()
    {
        var model = Load("llama", Precision.Fp16);
        var checkpoint = SafetensorsTestFile.Read(Path.Combine(TestPaths.Oracle("llama"), "model.safetensors"));
        var original = MemoryMarshal.Cast<byte, float>(checkpoint.Single(t => t.Name == "model.embed_tokens.weight").Data);
        var stored = MemoryMarshal.Cast<byte, Half>(model.Bytes(model.Initializer("model.embed_tokens.weight")));
        Assert.Equal(original.Length, stored.Length);
        for (var i = 0; i < original.Length; i++)
            Assert.Equal((Half)original[i], stored[i]);
    }

    [Theory]
    [MemberData(nameof(AllBuilds))]
    public void Every_node_input_is_defined_before_use_and_every_output_is_produced(string fixture, Precision precision)
    {
        // ONNX requires nodes in topological order; a dangling name would only fail at load time.
        var graph = Load(fixture, precision).Graph;
        var defined = new HashSet<string>(graph.Input.Select(i => i.Name).Concat(graph.Initializer.Select(i => i.Name)), StringComparer.Ordinal);
        foreach (var node in graph.Node)
        {
            foreach (var input in node.Input.Where(i => i.Length > 0))
                Assert.True(defined.Contains(input), $"{node.Name} reads '{input}' before anything defines it");
            foreach (var output in node.Output.Where(o => o.Length > 0))
                Assert.True(defined.Add(output), $"'{output}' is defined twice");
        }
        Assert.All(graph.Output, o => Assert.Contains(o.Name, defined));
        Assert.Equal(graph.Node.Count, graph.Node.Select(n => n.Name).Distinct().Count());
    }

    [Theory]
    [MemberData(nameof(AllBuilds))]
    public void Genai_config_agrees_with_the_graph_and_config_json(string fixture, Precision precision)
    {
        var folder = models.Folder(fixture, precision);
        var model = OnnxTestModel.Load(folder);
        var config = GenaiConfig.Parse(File.ReadAllText(Path.Combine(folder, ModelFolder.ConfigFileName)), ModelFolder.ConfigFileName);
        using var hf = JsonDocument.Parse(File.ReadAllText(Path.Combine(TestPaths.Oracle(fixture), "config.json")));
        var hfRoot = hf.RootElement;
        var decoder = config.Model.Decoder;

        Assert.Equal(fixture, config.Model.Type);
        Assert.Equal(DecoderModelBuilder.GraphFileName, decoder.Filename);
        Assert.Equal(hfRoot.GetProperty("num_hidden_layers").GetInt32(), decoder.NumHiddenLayers);
        Assert.Equal(hfRoot.GetProperty("hidden_size").GetInt32(), decoder.HiddenSize);
        Assert.Equal(hfRoot.GetProperty("vocab_size").GetInt32(), config.Model.VocabSize);
        Assert.Equal(hfRoot.GetProperty("max_position_embeddings").GetInt32(), config.Model.ContextLength);
        Assert.Equal(hfRoot.GetProperty("bos_token_id").GetInt32(), config.Model.BosTokenId);
        Assert.Equal([hfRoot.GetProperty("eos_token_id").GetInt32()], config.Model.EosTokenId);

        // The graph says the same.
        var attention = model.Nodes("GroupQueryAttention");
        Assert.Equal(decoder.NumHiddenLayers, attention.Count);
        Assert.All(attention, n => Assert.Equal(decoder.NumAttentionHeads, OnnxTestModel.Attribute(n, "num_heads")));
        Assert.All(attention, n => Assert.Equal(decoder.NumKeyValueHeads, OnnxTestModel.Attribute(n, "kv_num_heads")));
        var past = model.Graph.Input.Single(i => i.Name == "past_key_values.0.key");
        Assert.Equal($"{decoder.NumKeyValueHeads}", OnnxTestModel.Dims(past)[1]);
        Assert.Equal($"{decoder.HeadSize}", OnnxTestModel.Dims(past)[3]);
        Assert.Equal($"{config.Model.VocabSize}", OnnxTestModel.Dims(model.Graph.Output.Single(o => o.Name == "logits"))[2]);
        Assert.Equal(config.Model.ContextLength, model.Initializer("cos_cache").Dims[0]);
        Assert.Equal(decoder.HeadSize / 2, model.Initializer("cos_cache").Dims[1]);
        Assert.Equal(config.Model.VocabSize, model.Initializer("model.embed_tokens.weight").Dims[0]);
        Assert.Equal(decoder.HiddenSize, model.Initializer("model.embed_tokens.weight").Dims[1]);

        // Its input and output names, with %d filled in, are the graph's.
        List<string> inputs = [decoder.Inputs.InputIds, decoder.Inputs.AttentionMask!];
        List<string> outputs = [decoder.Outputs.Logits];
        for (var i = 0; i < decoder.NumHiddenLayers; i++)
        {
            var layer = i.ToString(System.Globalization.CultureInfo.InvariantCulture);
            inputs.AddRange([decoder.Inputs.PastKeyNames.Replace("%d", layer, StringComparison.Ordinal), decoder.Inputs.PastValueNames.Replace("%d", layer, StringComparison.Ordinal)]);
            outputs.AddRange([decoder.Outputs.PresentKeyNames.Replace("%d", layer, StringComparison.Ordinal), decoder.Outputs.PresentValueNames.Replace("%d", layer, StringComparison.Ordinal)]);
        }
        Assert.Null(decoder.Inputs.PositionIds);
        // logits_to_keep has a default, so genai_config.json need not name it: onnxruntime-genai
        // leaves it unbound, and our runner finds it in the graph.
        inputs.Add(DecoderGraph.LogitsToKeep);
        Assert.Equal(inputs, model.Graph.Input.Select(v => v.Name));
        Assert.Equal(outputs, model.Graph.Output.Select(v => v.Name));
    }

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void Tokenizer_files_are_copied_beside_the_graph(string fixture)
    {
        var folder = models.Folder(fixture, Precision.Fp32);
        foreach (var name in new[] { "tokenizer.json", "tokenizer_config.json" })
            Assert.Equal(File.ReadAllBytes(Path.Combine(TestPaths.Oracle(fixture), name)), File.ReadAllBytes(Path.Combine(folder, name)));
        // Weights and config.json are not part of the output.
        Assert.Equal(
            ["genai_config.json", "model.onnx", "model.onnx.data", "tokenizer.json", "tokenizer_config.json"],
            Directory.GetFiles(folder).Select(Path.GetFileName).Order(StringComparer.Ordinal));
    }
}
