using InferenceServer.ModelBuilder.Checkpoint;
using InferenceServer.ModelBuilder.Onnx;
using InferenceServer.ModelBuilder.Quantization;
using static InferenceServer.ModelBuilder.Onnx.GraphBuilder;
using DataType = InferenceServer.ModelBuilder.Onnx.TensorProto.Types.DataType;

namespace InferenceServer.ModelBuilder;

/// <summary>Weight precision of the written graph.</summary>
public enum Precision
{
    /// <summary>float32 weights and activations: the CPU default and the reference.</summary>
    Fp32,

    /// <summary>float16 weights, activations and KV cache (GPU); logits are cast to float32.</summary>
    Fp16,

    /// <summary>4-bit block-quantized linear weights (MatMulNBits) with float32 activations.</summary>
    Int4,
}

/// <summary>
/// Writes a Llama-family decoder in the dense graph contract:
/// inputs input_ids [batch, sequence], attention_mask [batch, total] and per layer
/// past_key_values.N.key/value [batch, kv_heads, past, head_dim]; outputs logits
/// [batch, 1, vocab] (the last position of each row only) and present.N.key/value, which the
/// runner binds to the same buffers as the past.
///
/// Per layer: RMSNorm (fused with the residual add from the second norm on), one packed q/k/v
/// projection, GroupQueryAttention with rotary embedding from cos/sin caches, the output
/// projection, RMSNorm, SwiGLU (one packed gate/up projection).
/// </summary>
public sealed class DecoderGraph
{
    public const string InputIds = "input_ids";
    public const string AttentionMask = "attention_mask";
    public const string Logits = "logits";
    public const string PastKeyPattern = "past_key_values.%d.key";
    public const string PastValuePattern = "past_key_values.%d.value";
    public const string PresentKeyPattern = "present.%d.key";
    public const string PresentValuePattern = "present.%d.value";

    private readonly GraphBuilder _g;
    private readonly HfConfig _c;
    private readonly IWeightSource _w;
    private readonly Precision _precision;
    private readonly DataType _t;
    private readonly Int4Quantizer? _quantizer;

    private readonly bool _allPositions;
    private readonly int _int4AccuracyLevel;

    private DecoderGraph(GraphBuilder graph, HfConfig config, IWeightSource weights, BuildOptions options)
    {
        _g = graph;
        _c = config;
        _w = weights;
        _precision = options.Precision;
        _t = _precision == Precision.Fp16 ? DataType.Float16 : DataType.Float;
        if (_precision == Precision.Int4)
        {
            _quantizer = options.Int4BlockSize is >= 16 && (options.Int4BlockSize & (options.Int4BlockSize - 1)) == 0
                ? new Int4Quantizer(options.Int4BlockSize)
                : throw new ModelBuildException($"int4 block size {options.Int4BlockSize} is not a power of two of at least 16");
        }
        _allPositions = options.LogitsForAllPositions;
        _int4AccuracyLevel = options.Int4AccuracyLevel;
    }

    public static void Write(GraphBuilder graph, HfConfig config, IWeightSource weights, BuildOptions options) =>
        new DecoderGraph(graph, config, weights, options).Write();

    private static string LayerName(string pattern, int layer) => pattern.Replace("%d", layer.ToString(System.Globalization.CultureInfo.InvariantCulture), StringComparison.Ordinal);

    private void Write()
    {
        int h = _c.HiddenSize, heads = _c.NumAttentionHeads, kvHeads = _c.NumKeyValueHeads, hd = _c.HeadDim;

        _g.Input(InputIds, DataType.Int64, "batch_size", "sequence_length");
        _g.Input(AttentionMask, DataType.Int64, "batch_size", "total_sequence_length");
        for (var i = 0; i < _c.NumHiddenLayers; i++)
        {
            _g.Input(LayerName(PastKeyPattern, i), _t, "batch_size", kvHeads, "past_sequence_length", hd);
            _g.Input(LayerName(PastValuePattern, i), _t, "batch_size", kvHeads, "past_sequence_length", hd);
        }
        if (_allPositions)
            _g.Output(Logits, DataType.Float, "batch_size", "sequence_length", _c.VocabSize);
        else
            _g.Output(Logits, DataType.Float, "batch_size", 1, _c.VocabSize);
        for (var i = 0; i < _c.NumHiddenLayers; i++)
        {
            _g.Output(LayerName(PresentKeyPattern, i), _t, "batch_size", kvHeads, "present_sequence_length", hd);
            _g.Output(LayerName(PresentValuePattern, i), _t, "batch_size", kvHeads, "present_sequence_length", hd);
        }

        // What GroupQueryAttention needs from the mask: each row's total length - 1 and the mask
        // width. The last real position of a row in this step is min(length - 1, sequence - 1):
        // the row's own last token when rows are right-padded fresh prompts, the last column otherwise.
        var one = _g.Int64Scalar("const/one", 1);
        var axis1 = _g.Int64Constant("const/axis1", 1);
        var maskSum = _g.Op("ReduceSum", "/mask/reduce_sum", [AttentionMask, axis1], "", Attr("keepdims", 0L));
        var lastIndexInTotal = _g.Op("Sub", "/mask/seqlens_k_int64", [maskSum, one]);
        var seqlensK = _g.Op("Cast", "/mask/seqlens_k", [lastIndexInTotal], "", Attr("to", (long)DataType.Int32));
        var maskWidth = _g.Op("Gather", "/mask/width", [_g.Op("Shape", "/mask/shape", [AttentionMask]), one], "", Attr("axis", 0L));
        var totalSequenceLength = _g.Op("Cast", "/mask/total_sequence_length", [maskWidth], "", Attr("to", (long)DataType.Int32));

        var (cos, sin) = RotaryCaches();

        var embedding = _w.Read("model.embed_tokens.weight", [_c.VocabSize, h]);
        var embeddingName = WeightInitializer("model.embed_tokens.weight", embedding, _c.VocabSize, h);
        var hidden = _g.Op("Gather", "/model/embed_tokens/Gather", [embeddingName, InputIds], "", Attr("axis", 0L));

        string residual = hidden;
        string? pending = null; // output of the previous block, not yet added to the residual
        for (var layer = 0; layer < _c.NumHiddenLayers; layer++)
        {
            var prefix = $"model.layers.{layer}";
            var x = Norm($"/{prefix}/input_layernorm", $"{prefix}.input_layernorm.weight", ref residual, pending);

            // Attention
            var qkvRows = (heads + 2 * kvHeads) * hd;
            var qkvWeight = Concat(
                _w.Read($"{prefix}.self_attn.q_proj.weight", [heads * hd, h]),
                _w.Read($"{prefix}.self_attn.k_proj.weight", [kvHeads * hd, h]),
                _w.Read($"{prefix}.self_attn.v_proj.weight", [kvHeads * hd, h]));
            float[]? qkvBias = null;
            if (_c.QkvBias)
            {
                qkvBias = Concat(
                    _w.Read($"{prefix}.self_attn.q_proj.bias", [heads * hd]),
                    _w.Read($"{prefix}.self_attn.k_proj.bias", [kvHeads * hd]),
                    _w.Read($"{prefix}.self_attn.v_proj.bias", [kvHeads * hd]));
            }
            var qkv = Linear($"/{prefix}/attn/qkv_proj", $"{prefix}.self_attn.qkv_proj", x, qkvWeight, qkvRows, h, qkvBias);
            var attention = _g.Node("GroupQueryAttention", $"/{prefix}/attn/GroupQueryAttention",
                [qkv, "", "", LayerName(PastKeyPattern, layer), LayerName(PastValuePattern, layer), seqlensK, totalSequenceLength, cos, sin],
                3, MicrosoftDomain,
                [Attr("num_heads", (long)heads), Attr("kv_num_heads", (long)kvHeads), Attr("do_rotary", 1L), Attr("rotary_interleaved", 0L), Attr("local_window_size", -1L)],
                [$"/{prefix}/attn/GroupQueryAttention/output_0", LayerName(PresentKeyPattern, layer), LayerName(PresentValuePattern, layer)]);
            pending = Linear($"/{prefix}/attn/o_proj", $"{prefix}.self_attn.o_proj", attention[0],
                _w.Read($"{prefix}.self_attn.o_proj.weight", [h, heads * hd]), h, heads * hd, null);

            // SwiGLU MLP
            x = Norm($"/{prefix}/post_attention_layernorm", $"{prefix}.post_attention_layernorm.weight", ref residual, pending);
            var inter = _c.IntermediateSize;
            var gateUp = Linear($"/{prefix}/mlp/gate_up_proj", $"{prefix}.mlp.gate_up_proj", x,
                Concat(_w.Read($"{prefix}.mlp.gate_proj.weight", [inter, h]), _w.Read($"{prefix}.mlp.up_proj.weight", [inter, h])),
                2 * inter, h, null);
            var split = _g.Node("Split", $"/{prefix}/mlp/Split", [gateUp, _g.Int64Constant($"/{prefix}/mlp/split_sizes", inter, inter)], 2, "", [Attr("axis", -1L)]);
            var silu = _g.Op("Mul", $"/{prefix}/mlp/silu", [split[0], _g.Op("Sigmoid", $"/{prefix}/mlp/Sigmoid", [split[0]])]);
            var product = _g.Op("Mul", $"/{prefix}/mlp/Mul", [silu, split[1]]);
            pending = Linear($"/{prefix}/mlp/down_proj", $"{prefix}.mlp.down_proj", product,
                _w.Read($"{prefix}.mlp.down_proj.weight", [h, inter]), h, inter, null);
        }
        var normed = Norm("/model/norm", "model.norm.weight", ref residual, pending);

        // Keep only the last position of each row before the vocabulary projection.
        var last = normed;
        if (!_allPositions)
        {
            var sequenceLength = _g.Op("Gather", "/ids/sequence_length", [_g.Op("Shape", "/ids/shape", [InputIds]), one], "", Attr("axis", 0L));
            var lastColumn = _g.Op("Sub", "/ids/last_column", [sequenceLength, one]);
            var lastPosition = _g.Op("Min", "/logits/last_position", [lastIndexInTotal, lastColumn]);
            var index = _g.Op("Unsqueeze", "/logits/index", [lastPosition, _g.Int64Constant("const/axes12", 1, 2)]);
            var expanded = _g.Op("Expand", "/logits/index_expanded", [index, _g.Int64Constant("const/hidden_shape", 1, 1, h)]);
            last = _g.Op("GatherElements", "/logits/last_hidden", [normed, expanded], "", Attr("axis", 1L));
        }

        string logits;
        // Tied models use the embedding as the output projection, as Hugging Face does, even
        // when the checkpoint also stores a copy under lm_head.weight.
        if (_c.TieWordEmbeddings)
        {
            // Tied: multiply by the embedding matrix itself (Gemm with transB) instead of storing a transposed copy.
            var flat = _g.Op("Reshape", "/lm_head/flatten", [last, _g.Int64Constant("const/flat_hidden", -1, h)]);
            var product = _g.Op("Gemm", "/lm_head/Gemm", [flat, embeddingName], "", Attr("transB", 1L));
            var rowShape = _allPositions
                ? _g.Op("Concat", "/lm_head/logits_shape", [_g.Op("Slice", "/lm_head/batch_and_sequence", [_g.Op("Shape", "/lm_head/hidden_shape", [last]), _g.Int64Constant("const/zero1", 0), _g.Int64Constant("const/two1", 2)]), _g.Int64Constant("const/vocab1", _c.VocabSize)], "", Attr("axis", 0L))
                : _g.Int64Constant("const/logits_shape", -1, 1, _c.VocabSize);
            logits = _g.Op("Reshape", "/lm_head/unflatten", [product, rowShape]);
        }
        else
        {
            logits = Linear("/lm_head", "lm_head", last, _w.Read("lm_head.weight", [_c.VocabSize, h]), _c.VocabSize, h, null);
        }
        if (_t == DataType.Float)
            _g.Node("Identity", "/logits/Identity", [logits], outputNames: [Logits]);
        else
            _g.Node("Cast", "/logits/Cast", [logits], 1, "", [Attr("to", (long)DataType.Float)], [Logits]);
    }

    // RMSNorm of residual + pending (fused into one SkipSimplifiedLayerNormalization once there
    // is something pending); the residual stream becomes the sum.
    private string Norm(string name, string weightName, ref string residual, string? pending)
    {
        var weight = WeightInitializer(weightName, _w.Read(weightName, [_c.HiddenSize]), _c.HiddenSize);
        var epsilon = Attr("epsilon", (float)_c.RmsNormEps);
        if (pending is null)
            return _g.Op("SimplifiedLayerNormalization", $"{name}/SimplifiedLayerNormalization", [residual, weight], "",
                epsilon, Attr("axis", -1L), Attr("stash_type", 1L));
        var outputs = _g.Node("SkipSimplifiedLayerNormalization", $"{name}/SkipSimplifiedLayerNormalization",
            [pending, residual, weight], 4, MicrosoftDomain, [epsilon],
            [$"{name}/output_0", "", "", $"{name}/output_3"]);
        residual = outputs[3];
        return outputs[0];
    }

    /// <summary>y = x W^T (+ b) for a Hugging Face weight W [n, k].</summary>
    private string Linear(string nodeName, string weightName, string input, float[] weight, int n, int k, float[]? bias)
    {
        string output;
        if (_quantizer is not null)
        {
            var q = _quantizer.Quantize(weight, n, k);
            var blob = _quantizer.BlockSize / 2;
            var codes = _g.Initializer<byte>($"{weightName}.weight_q4", DataType.Uint8, q.Codes, n, q.BlocksPerRow, blob);
            var scales = _g.Initializer<float>($"{weightName}.weight_scales", DataType.Float, q.Scales, (long)n * q.BlocksPerRow);
            var zeros = _g.Initializer<byte>($"{weightName}.weight_zero_points", DataType.Uint8, q.ZeroPoints, q.ZeroPoints.Length);
            output = _g.Op("MatMulNBits", $"{nodeName}/MatMulNBits", [input, codes, scales, zeros], MicrosoftDomain,
                Attr("K", (long)k), Attr("N", (long)n), Attr("bits", 4L), Attr("block_size", (long)_quantizer.BlockSize), Attr("accuracy_level", (long)_int4AccuracyLevel));
        }
        else
        {
            var transposed = new float[weight.Length];
            for (var row = 0; row < n; row++)
            {
                for (var col = 0; col < k; col++)
                    transposed[col * n + row] = weight[row * k + col];
            }
            output = _g.Op("MatMul", $"{nodeName}/MatMul", [input, WeightInitializer($"{weightName}.weight", transposed, k, n)]);
        }
        if (bias is null)
            return output;
        return _g.Op("Add", $"{nodeName}/Add", [output, WeightInitializer($"{weightName}.bias", bias, n)]);
    }

    /// <summary>A float tensor stored in the activation precision (float16 graphs store float16).</summary>
    private string WeightInitializer(string name, float[] values, params long[] dims)
    {
        if (_t == DataType.Float)
            return _g.Initializer<float>(name, DataType.Float, values, dims);
        var halves = new Half[values.Length];
        System.Numerics.Tensors.TensorPrimitives.ConvertToHalf(values, halves);
        return _g.Initializer<Half>(name, DataType.Float16, halves, dims);
    }

    // cos/sin of position * inverse frequency, [max_positions, head_dim / 2], as HF's rotate-half RoPE uses them.
    private (string Cos, string Sin) RotaryCaches()
    {
        var half = _c.HeadDim / 2;
        var inverse = new double[half];
        for (var i = 0; i < half; i++)
            inverse[i] = 1.0 / Math.Pow(_c.RopeTheta, 2.0 * i / _c.HeadDim);
        _c.RopeScaling?.Apply(inverse);
        var positions = _c.MaxPositionEmbeddings;
        var cos = new float[positions * half];
        var sin = new float[positions * half];
        for (var p = 0; p < positions; p++)
        {
            for (var i = 0; i < half; i++)
            {
                // Round the angle to float32 first, as HF computes it in float32.
                var angle = (double)(float)((float)p * (float)inverse[i]);
                cos[p * half + i] = (float)Math.Cos(angle);
                sin[p * half + i] = (float)Math.Sin(angle);
            }
        }
        return (WeightInitializer("cos_cache", cos, positions, half), WeightInitializer("sin_cache", sin, positions, half));
    }

    private static float[] Concat(params float[][] parts)
    {
        var result = new float[parts.Sum(p => p.Length)];
        var offset = 0;
        foreach (var part in parts)
        {
            part.CopyTo(result, offset);
            offset += part.Length;
        }
        return result;
    }
}
