using InferenceServer.Model;
using InferenceServer.Model.Lora;
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

    /// <summary>bfloat16 weights, activations and KV cache (GPU, the paged graph); logits are cast to float32.</summary>
    Bf16,

    /// <summary>4-bit block-quantized linear weights (MatMulNBits) with float32 activations.</summary>
    Int4,
}

/// <summary>Which of the contract's two decoder graphs to write.</summary>
public enum GraphVariant
{
    /// <summary>GroupQueryAttention over per-sequence KV buffers: any provider, the CPU path.</summary>
    Dense,

    /// <summary>PagedAttention over one block pool per layer, tokens packed on one axis: CUDA, fp16 or bf16.</summary>
    Paged,
}

/// <summary>
/// Writes a Llama-family decoder in one of the two graph contracts.
///
/// Dense:
/// inputs input_ids [batch, sequence], attention_mask [batch, total] and per layer
/// past_key_values.N.key/value [batch, kv_heads, past, head_dim], and logits_to_keep, an int64
/// scalar with a default of 1 (an initializer of the same name) that callers may leave unbound;
/// outputs logits [batch, logits_to_keep, vocab] (the last logits_to_keep real positions of each
/// row, oldest first: only those reach the vocabulary projection; declared [batch, 1, vocab], its
/// shape at the default) and present.N.key/value, which
/// the runner binds to the same buffers as the past. Several positions are for checking drafted
/// tokens in one step; a row should ask for no more positions than it has new tokens.
///
/// Paged (<see cref="GraphVariant.Paged"/>): the new tokens of all sequences packed on one
/// axis, input_ids [num_tokens]; cumulative_sequence_length [batch + 1] and past_seqlens [batch]
/// say where each sequence's tokens start and how much KV it has; block_table
/// [batch, max_blocks] maps its positions to blocks of the per-layer pools
/// key_cache.N / value_cache.N [num_blocks, block_size, kv_heads, head_dim], which
/// key_cache_out.N / value_cache_out.N alias (PagedAttention writes the new keys in place);
/// attention_metadata [2] (host memory) bounds the longest query and KV length so the kernel
/// never reads lengths back from the device. Only each sequence's last token reaches the
/// vocabulary projection, and the logits are reduced in the graph to what sampling needs:
/// next_token (argmax), top_logits/top_ids (the k largest, sorted) and logsumexp (for
/// log-probabilities), so a step copies kilobytes to the host; logits [batch, vocab] stays
/// available for the samplers that need the whole distribution.
///
/// Per layer: RMSNorm (fused with the residual add from the second norm on), one packed q/k/v
/// projection, GroupQueryAttention with rotary embedding from cos/sin caches, the output
/// projection, RMSNorm, SwiGLU (one packed gate/up projection).
///
/// With adapter inputs (<see cref="BuildOptions.LoraTargets"/>, dense graph only), each chosen
/// packed projection y = x W also adds x A[i] B[i], where A and B are stacks of adapters given as
/// inputs ([adapters, in, rank], [adapters, rank, out]; <see cref="LoraNames"/>) and i is the
/// row's entry of lora_index [rows]: Gather picks each row's matrices and a batched MatMul applies
/// them, so rows of different adapters share a run. Each stack defaults to an empty initializer of
/// rank 0 and lora_index to [0], so a run that binds none of them computes the base model.
/// </summary>
public sealed class DecoderGraph
{
    public const string InputIds = "input_ids";
    public const string AttentionMask = "attention_mask";
    public const string Logits = "logits";
    public const string LogitsToKeep = DecoderRunner.LogitsToKeepInput;
    public const string PastKeyPattern = "past_key_values.%d.key";
    public const string PastValuePattern = "past_key_values.%d.value";
    public const string PresentKeyPattern = "present.%d.key";
    public const string PresentValuePattern = "present.%d.value";

    public const string CumulativeSequenceLength = "cumulative_sequence_length";
    public const string PastSequenceLengths = "past_seqlens";
    public const string BlockTable = "block_table";
    public const string AttentionMetadata = "attention_metadata";
    public const string KeyCachePattern = "key_cache.%d";
    public const string ValueCachePattern = "value_cache.%d";
    public const string KeyCacheOutPattern = "key_cache_out.%d";
    public const string ValueCacheOutPattern = "value_cache_out.%d";
    public const string NextToken = "next_token";
    public const string TopLogits = "top_logits";
    public const string TopIds = "top_ids";
    public const string LogSumExp = "logsumexp";

    private readonly GraphBuilder _g;
    private readonly HfConfig _c;
    private readonly IWeightSource _w;
    private readonly Precision _precision;
    private readonly DataType _t;
    private readonly Int4Quantizer? _quantizer;

    private readonly bool _allPositions;
    private readonly int _int4AccuracyLevel;
    private readonly bool _paged;
    private readonly int _topK;
    private readonly HashSet<string> _loraProjections;

    private DecoderGraph(GraphBuilder graph, HfConfig config, IWeightSource weights, BuildOptions options)
    {
        _g = graph;
        _c = config;
        _w = weights;
        _precision = options.Precision;
        _t = _precision switch
        {
            Precision.Fp16 => DataType.Float16,
            Precision.Bf16 => DataType.Bfloat16,
            _ => DataType.Float,
        };
        _paged = options.Variant == GraphVariant.Paged;
        if (_paged && _precision is not (Precision.Fp16 or Precision.Bf16))
            throw new ModelBuildException($"the paged graph runs on CUDA in fp16 or bf16, not {_precision.ToString().ToLowerInvariant()}");
        if (!_paged && _precision == Precision.Bf16)
            throw new ModelBuildException("bf16 is for the paged graph (CUDA); the dense graph takes fp32, fp16 or int4");
        if (_paged && options.LogitsForAllPositions)
            throw new ModelBuildException("the paged graph returns logits for each sequence's last token only");
        if (options.SamplingTopK < 1)
            throw new ModelBuildException($"the top-k reduced in the graph must be at least 1, not {options.SamplingTopK}");
        _topK = Math.Min(options.SamplingTopK, config.VocabSize);
        if (_precision == Precision.Int4)
        {
            _quantizer = options.Int4BlockSize is >= 16 && (options.Int4BlockSize & (options.Int4BlockSize - 1)) == 0
                ? new Int4Quantizer(options.Int4BlockSize)
                : throw new ModelBuildException($"int4 block size {options.Int4BlockSize} is not a power of two of at least 16");
        }
        _loraProjections = LoraProjections(options);
        _allPositions = options.LogitsForAllPositions;
        _int4AccuracyLevel = options.Int4AccuracyLevel;
    }

    public static void Write(GraphBuilder graph, HfConfig config, IWeightSource weights, BuildOptions options) =>
        new DecoderGraph(graph, config, weights, options).Write();

    private void Write()
    {
        int h = _c.HiddenSize, heads = _c.NumAttentionHeads, kvHeads = _c.NumKeyValueHeads, hd = _c.HeadDim;
        var one = _g.Int64Scalar("const/one", 1);
        var (cos, sin) = RotaryCaches();
        var (attention, sampledRows) = _paged ? DeclarePagedInputs(cos, sin) : DeclareDenseInputs(cos, sin, one);
        if (_loraProjections.Count > 0)
        {
            _g.Input(LoraNames.AdapterIndex, DataType.Int64, "lora_rows");
            _g.Int64Constant(LoraNames.AdapterIndex, 0);
        }

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
            qkv = WithAdapters(layer, "self_attn.qkv_proj", x, qkv, h, qkvRows);
            var attended = attention(layer, $"/{prefix}/attn", qkv);
            pending = Linear($"/{prefix}/attn/o_proj", $"{prefix}.self_attn.o_proj", attended,
                _w.Read($"{prefix}.self_attn.o_proj.weight", [h, heads * hd]), h, heads * hd, null);
            pending = WithAdapters(layer, "self_attn.o_proj", attended, pending, heads * hd, h);

            // SwiGLU MLP
            x = Norm($"/{prefix}/post_attention_layernorm", $"{prefix}.post_attention_layernorm.weight", ref residual, pending);
            var inter = _c.IntermediateSize;
            var gateUp = Linear($"/{prefix}/mlp/gate_up_proj", $"{prefix}.mlp.gate_up_proj", x,
                Concat(_w.Read($"{prefix}.mlp.gate_proj.weight", [inter, h]), _w.Read($"{prefix}.mlp.up_proj.weight", [inter, h])),
                2 * inter, h, null);
            gateUp = WithAdapters(layer, "mlp.gate_up_proj", x, gateUp, h, 2 * inter);
            var split = _g.Node("Split", $"/{prefix}/mlp/Split", [gateUp, _g.Int64Constant($"/{prefix}/mlp/split_sizes", inter, inter)], 2, "", [Attr("axis", -1L)]);
            var silu = _g.Op("Mul", $"/{prefix}/mlp/silu", [split[0], _g.Op("Sigmoid", $"/{prefix}/mlp/Sigmoid", [split[0]])]);
            var product = _g.Op("Mul", $"/{prefix}/mlp/Mul", [silu, split[1]]);
            pending = Linear($"/{prefix}/mlp/down_proj", $"{prefix}.mlp.down_proj", product,
                _w.Read($"{prefix}.mlp.down_proj.weight", [h, inter]), h, inter, null);
            pending = WithAdapters(layer, "mlp.down_proj", product, pending, inter, h);
        }
        var normed = Norm("/model/norm", "model.norm.weight", ref residual, pending);

        // Keep only the positions that are sampled before the vocabulary projection.
        var last = sampledRows(normed);

        string logits;
        // Tied models use the embedding as the output projection, as Hugging Face does, even
        // when the checkpoint also stores a copy under lm_head.weight.
        if (_c.TieWordEmbeddings)
        {
            // Tied: multiply by the embedding matrix itself (Gemm with transB) instead of storing a transposed copy.
            var flat = _paged ? last : _g.Op("Reshape", "/lm_head/flatten", [last, _g.Int64Constant("const/flat_hidden", -1, h)]);
            var product = _g.Op("Gemm", "/lm_head/Gemm", [flat, embeddingName], "", Attr("transB", 1L));
            if (_paged)
            {
                logits = product;
            }
            else
            {
                logits = _g.Op("Reshape", "/lm_head/unflatten", [product, LogitsShape(_g, last, _c.VocabSize)]);
            }
        }
        else
        {
            logits = Linear("/lm_head", "lm_head", last, _w.Read("lm_head.weight", [_c.VocabSize, h]), _c.VocabSize, h, null);
        }
        if (_t == DataType.Float)
            _g.Node("Identity", "/logits/Identity", [logits], outputNames: [Logits]);
        else
            _g.Node("Cast", "/logits/Cast", [logits], 1, "", [Attr("to", (long)DataType.Float)], [Logits]);
        if (_paged)
            ReduceLogitsForSampling();
    }

    private delegate string AttentionNode(int layer, string name, string qkv);

    // Dense contract: input_ids/attention_mask [batch, ...], per-layer past/present KV; returns
    // the GroupQueryAttention writer and the selection of the positions that are sampled.
    private (AttentionNode Attend, Func<string, string> SampledRows) DeclareDenseInputs(string cos, string sin, string one)
    {
        int kvHeads = _c.NumKeyValueHeads, hd = _c.HeadDim;
        _g.Input(InputIds, DataType.Int64, "batch_size", "sequence_length");
        _g.Input(AttentionMask, DataType.Int64, "batch_size", "total_sequence_length");
        for (var i = 0; i < _c.NumHiddenLayers; i++)
        {
            _g.Input(LayerNames.For(PastKeyPattern, i), _t, "batch_size", kvHeads, "past_sequence_length", hd);
            _g.Input(LayerNames.For(PastValuePattern, i), _t, "batch_size", kvHeads, "past_sequence_length", hd);
        }
        if (_allPositions)
        {
            _g.Output(Logits, DataType.Float, "batch_size", "sequence_length", _c.VocabSize);
        }
        else
        {
            _g.Input(LogitsToKeep, DataType.Int64);
            _g.Int64Scalar(LogitsToKeep, 1);
            // Declared [batch, 1, vocab], the shape with logits_to_keep at its default: readers that
            // take a fixed 1 there to mean "the last position only" (onnxruntime-genai, which sizes
            // its logits buffer from it) keep working. Bound to N, the output is [batch, N, vocab].
            _g.Output(Logits, DataType.Float, "batch_size", 1, _c.VocabSize);
        }
        for (var i = 0; i < _c.NumHiddenLayers; i++)
        {
            _g.Output(LayerNames.For(PresentKeyPattern, i), _t, "batch_size", kvHeads, "present_sequence_length", hd);
            _g.Output(LayerNames.For(PresentValuePattern, i), _t, "batch_size", kvHeads, "present_sequence_length", hd);
        }

        // What GroupQueryAttention needs from the mask: each row's total length - 1 and the mask
        // width. The last real position of a row in this step is min(length, sequence) - 1: the
        // row's own last token when rows are right-padded fresh prompts, the last column otherwise.
        var axis1 = _g.Int64Constant("const/axis1", 1);
        var maskSum = _g.Op("ReduceSum", "/mask/reduce_sum", [AttentionMask, axis1], "", Attr("keepdims", 0L));
        var lastIndexInTotal = _g.Op("Sub", "/mask/seqlens_k_int64", [maskSum, one]);
        var seqlensK = _g.Op("Cast", "/mask/seqlens_k", [lastIndexInTotal], "", Attr("to", (long)DataType.Int32));
        var maskWidth = _g.Op("Gather", "/mask/width", [_g.Op("Shape", "/mask/shape", [AttentionMask]), one], "", Attr("axis", 0L));
        var totalSequenceLength = _g.Op("Cast", "/mask/total_sequence_length", [maskWidth], "", Attr("to", (long)DataType.Int32));

        AttentionNode attend = (layer, name, qkv) => _g.Node("GroupQueryAttention", $"{name}/GroupQueryAttention",
            [qkv, "", "", LayerNames.For(PastKeyPattern, layer), LayerNames.For(PastValuePattern, layer), seqlensK, totalSequenceLength, cos, sin],
            3, MicrosoftDomain,
            [Attr("num_heads", (long)_c.NumAttentionHeads), Attr("kv_num_heads", (long)kvHeads), Attr("do_rotary", 1L), Attr("rotary_interleaved", 0L), Attr("local_window_size", -1L)],
            [$"{name}/GroupQueryAttention/output_0", LayerNames.For(PresentKeyPattern, layer), LayerNames.For(PresentValuePattern, layer)])[0];
        return (attend, normed =>
        {
            if (_allPositions)
                return normed;
            var sequenceLength = _g.Op("Gather", "/ids/sequence_length", [_g.Op("Shape", "/ids/shape", [InputIds]), one], "", Attr("axis", 0L));
            return LastPositionsOfEachRow(_g, normed, maskSum, sequenceLength);
        });
    }

    /// <summary>Name of the node that gathers the kept positions' hidden states; the vocabulary projection reads its output.</summary>
    internal const string KeptHiddenNode = "/logits/last_hidden";

    /// <summary>
    /// The dense graph's last <see cref="LogitsToKeep"/> (N) real positions of each row, oldest
    /// first: GatherND (one batch dimension) at min(length, sequence) - [N, N - 1, ..., 1]. With
    /// N = 1 that is the row's last real position, as graphs without the input had, for one node
    /// more than they took. A row with fewer new tokens than N gets undefined rows in the places
    /// before its first (a negative index counts from the end, or fails past -sequence).
    /// </summary>
    internal static string LastPositionsOfEachRow(GraphBuilder g, string normed, string maskSum, string sequenceLength)
    {
        var end = g.Op("Min", "/logits/end", [maskSum, sequenceLength]);
        var back = g.Op("Range", "/logits/back", [LogitsToKeep, g.Int64Scalar("const/zero", 0), g.Int64Scalar("const/minus_one", -1)]);
        var positions = g.Op("Sub", "/logits/positions", [g.Op("Unsqueeze", "/logits/end_column", [end, g.Int64Constant("const/axes1", 1)]), back]);
        var index = g.Op("Unsqueeze", "/logits/index", [positions, g.Int64Constant("const/axes2", 2)]);
        return g.Op("GatherND", KeptHiddenNode, [normed, index], "", Attr("batch_dims", 1L));
    }

    /// <summary>
    /// [batch, positions, vocab] for the tied projection's flat product, from the hidden states it
    /// projected: the positions are the whole sequence or the kept ones.
    /// </summary>
    internal static string LogitsShape(GraphBuilder g, string hidden, int vocabSize) =>
        g.Op("Concat", "/lm_head/logits_shape",
            [g.Op("Slice", "/lm_head/batch_and_sequence", [g.Op("Shape", "/lm_head/hidden_shape", [hidden]), g.Int64Constant("const/zero1", 0), g.Int64Constant("const/two1", 2)]),
             g.Int64Constant("const/vocab1", vocabSize)], "", Attr("axis", 0L));

    // Paged contract: packed tokens, sequence boundaries, block tables and the per-layer pools;
    // returns the PagedAttention writer and the selection of each sequence's last token.
    private (AttentionNode Attend, Func<string, string> SampledRows) DeclarePagedInputs(string cos, string sin)
    {
        int kvHeads = _c.NumKeyValueHeads, hd = _c.HeadDim;
        _g.Input(InputIds, DataType.Int64, "num_tokens");
        _g.Input(CumulativeSequenceLength, DataType.Int32, "batch_size_plus_one");
        _g.Input(PastSequenceLengths, DataType.Int32, "batch_size");
        _g.Input(BlockTable, DataType.Int32, "batch_size", "max_blocks_per_sequence");
        _g.Input(AttentionMetadata, DataType.Int32, 2);
        for (var i = 0; i < _c.NumHiddenLayers; i++)
        {
            _g.Input(LayerNames.For(KeyCachePattern, i), _t, "num_blocks", "block_size", kvHeads, hd);
            _g.Input(LayerNames.For(ValueCachePattern, i), _t, "num_blocks", "block_size", kvHeads, hd);
        }
        _g.Output(NextToken, DataType.Int64, "batch_size");
        _g.Output(TopLogits, DataType.Float, "batch_size", _topK);
        _g.Output(TopIds, DataType.Int64, "batch_size", _topK);
        _g.Output(LogSumExp, DataType.Float, "batch_size");
        _g.Output(Logits, DataType.Float, "batch_size", _c.VocabSize);
        for (var i = 0; i < _c.NumHiddenLayers; i++)
        {
            _g.Output(LayerNames.For(KeyCacheOutPattern, i), _t, "num_blocks", "block_size", kvHeads, hd);
            _g.Output(LayerNames.For(ValueCacheOutPattern, i), _t, "num_blocks", "block_size", kvHeads, hd);
        }

        // Inputs 10-15 (slot mapping, sinks, q/k norms, cache scales) are not used by this family.
        AttentionNode attend = (layer, name, qkv) => _g.Node("PagedAttention", $"{name}/PagedAttention",
            [qkv, "", "", LayerNames.For(KeyCachePattern, layer), LayerNames.For(ValueCachePattern, layer),
             CumulativeSequenceLength, PastSequenceLengths, BlockTable, cos, sin, "", "", "", "", "", "", AttentionMetadata],
            3, MicrosoftDomain,
            [Attr("num_heads", (long)_c.NumAttentionHeads), Attr("kv_num_heads", (long)kvHeads), Attr("do_rotary", 1L), Attr("rotary_interleaved", 0L), Attr("local_window_size", -1L)],
            [$"{name}/PagedAttention/output_0", LayerNames.For(KeyCacheOutPattern, layer), LayerNames.For(ValueCacheOutPattern, layer)])[0];
        return (attend, LastTokenOfEachSequence);
    }

    // Packed rows: sequence i's last token is row cumulative_sequence_length[i + 1] - 1.
    private string LastTokenOfEachSequence(string normed)
    {
        var ends = _g.Op("Slice", "/sampled/ends", [CumulativeSequenceLength, _g.Int64Constant("const/one1", 1), _g.Int64Constant("const/end1", long.MaxValue)]);
        var ends64 = _g.Op("Cast", "/sampled/ends_int64", [ends], "", Attr("to", (long)DataType.Int64));
        var rows = _g.Op("Sub", "/sampled/rows", [ends64, _g.Int64Scalar("const/one_scalar", 1)]);
        return _g.Op("Gather", "/sampled/hidden", [normed, rows], "", Attr("axis", 0L));
    }

    // What a sampler needs from [batch, vocab] float logits, computed on the device.
    private void ReduceLogitsForSampling()
    {
        _g.Node("ArgMax", "/sampling/ArgMax", [Logits], 1, "", [Attr("axis", -1L), Attr("keepdims", 0L), Attr("select_last_index", 0L)], [NextToken]);
        _g.Node("TopK", "/sampling/TopK", [Logits, _g.Int64Constant("const/top_k", _topK)], 2, "",
            [Attr("axis", -1L), Attr("largest", 1L), Attr("sorted", 1L)], [TopLogits, TopIds]);
        _g.Node("ReduceLogSumExp", "/sampling/ReduceLogSumExp", [Logits, _g.Int64Constant("const/last_axis", -1)], 1, "",
            [Attr("keepdims", 0L)], [LogSumExp]);
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

    // The packed projections that get adapter inputs, checked against what the graph can carry.
    private HashSet<string> LoraProjections(BuildOptions options)
    {
        var projections = new HashSet<string>(StringComparer.Ordinal);
        if (options.LoraTargets.Count == 0)
            return projections;
        if (_paged)
            throw new ModelBuildException("adapter inputs are for the dense graph; the paged graph does not take them yet");
        if (_precision is not (Precision.Fp32 or Precision.Int4))
            throw new ModelBuildException($"adapter inputs need float32 activations (fp32 or int4 weights), not {_precision.ToString().ToLowerInvariant()}");
        foreach (var module in options.LoraTargets)
        {
            var projection = LoraNames.ProjectionOf(module)
                ?? throw new ModelBuildException($"'{module}' is not a module adapters can target; supported are {string.Join(", ", LoraNames.Modules)}");
            projections.Add(projection.Name);
        }
        return projections;
    }

    /// <summary>
    /// y + x A[lora_index] B[lora_index] for a packed projection with adapter inputs; y itself for
    /// the others. x is [rows, sequence, k], A [adapters, k, rank], B [adapters, rank, n].
    /// </summary>
    private string WithAdapters(int layer, string projectionName, string input, string output, int k, int n)
    {
        if (!_loraProjections.Contains(projectionName))
            return output;
        var projection = LoraNames.Projections.Single(p => p.Name == projectionName);
        var a = LoraNames.A(layer, projection);
        var b = LoraNames.B(layer, projection);
        var rank = $"{a[..^LoraNames.ASuffix.Length]}.lora_rank";
        _g.Input(a, DataType.Float, "lora_adapters", k, rank);
        _g.Input(b, DataType.Float, "lora_adapters", rank, n);
        // Defaults of rank 0: a run that binds no adapter adds zeros.
        _g.Initializer<float>(a, DataType.Float, [], 1, k, 0);
        _g.Initializer<float>(b, DataType.Float, [], 1, 0, n);
        var node = $"/model/layers.{layer}/{projectionName.Replace('.', '/')}/lora";
        var aRows = _g.Op("Gather", $"{node}/GatherA", [a, LoraNames.AdapterIndex], "", Attr("axis", 0L));
        var bRows = _g.Op("Gather", $"{node}/GatherB", [b, LoraNames.AdapterIndex], "", Attr("axis", 0L));
        var down = _g.Op("MatMul", $"{node}/MatMulA", [input, aRows]);
        var up = _g.Op("MatMul", $"{node}/MatMulB", [down, bRows]);
        return _g.Op("Add", $"{node}/Add", [output, up]);
    }

    /// <summary>A float tensor stored in the activation precision (float16 graphs store float16).</summary>
    private string WeightInitializer(string name, float[] values, params long[] dims)
    {
        if (_t == DataType.Float)
            return _g.Initializer<float>(name, DataType.Float, values, dims);
        if (_t == DataType.Bfloat16)
            return _g.Initializer<ushort>(name, DataType.Bfloat16, BFloat16Bits(values), dims);
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

    /// <summary>bfloat16 bit patterns: the upper half of each float, rounded to nearest even.</summary>
    public static ushort[] BFloat16Bits(ReadOnlySpan<float> values)
    {
        var bits = new ushort[values.Length];
        for (var i = 0; i < values.Length; i++)
        {
            var f = BitConverter.SingleToUInt32Bits(values[i]);
            bits[i] = float.IsNaN(values[i])
                ? (ushort)((f >> 16) | 0x40) // keep it a NaN after dropping the low mantissa bits
                : (ushort)((f + 0x7FFF + ((f >> 16) & 1)) >> 16);
        }
        return bits;
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
