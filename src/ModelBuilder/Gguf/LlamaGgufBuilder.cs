using InferenceServer.ModelBuilder.Checkpoint;

namespace InferenceServer.ModelBuilder.Gguf;

/// <summary>
/// Writes a LlamaForCausalLM checkpoint as a GGUF file for llama.cpp's "llama" architecture:
/// its hyperparameters under llama.*, the tokenizer under tokenizer.ggml.*, and the tensors
/// under llama.cpp's names. Norm weights stay float32; the others are float32 or float16.
/// </summary>
public static class LlamaGgufBuilder
{
    public static void Build(HfConfig config, IWeightSource weights, string tokenizerFolder, string outputFile, Precision precision, bool overwrite)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(weights);
        if (config.Architecture != "LlamaForCausalLM")
            throw new ModelBuildException($"GGUF output supports LlamaForCausalLM, not {config.Architecture}");
        if (config.AttentionBias)
            throw new ModelBuildException("GGUF output does not support attention_bias");
        if (config.RopeScaling is not null)
            throw new ModelBuildException($"GGUF output does not support rope_scaling ({config.RopeScaling.Type})");
        if (precision is not (Precision.Fp32 or Precision.Fp16))
            throw new ModelBuildException($"GGUF output is fp32 or fp16, not {precision}");
        var vocabulary = GgufVocabulary.Load(tokenizerFolder, config.VocabSize);

        var gguf = new GgufWriter();
        gguf.AddString("general.architecture", "llama");
        gguf.AddString("general.name", Path.GetFileNameWithoutExtension(outputFile));
        // llama.cpp's file types: 0 all float32, 1 mostly float16.
        gguf.AddUInt32("general.file_type", precision == Precision.Fp16 ? 1u : 0u);
        gguf.AddUInt32("general.alignment", GgufWriter.Alignment);
        gguf.AddUInt32("llama.context_length", (uint)config.MaxPositionEmbeddings);
        gguf.AddUInt32("llama.embedding_length", (uint)config.HiddenSize);
        gguf.AddUInt32("llama.block_count", (uint)config.NumHiddenLayers);
        gguf.AddUInt32("llama.feed_forward_length", (uint)config.IntermediateSize);
        gguf.AddUInt32("llama.attention.head_count", (uint)config.NumAttentionHeads);
        gguf.AddUInt32("llama.attention.head_count_kv", (uint)config.NumKeyValueHeads);
        gguf.AddUInt32("llama.attention.key_length", (uint)config.HeadDim);
        gguf.AddUInt32("llama.attention.value_length", (uint)config.HeadDim);
        gguf.AddUInt32("llama.rope.dimension_count", (uint)config.HeadDim);
        gguf.AddFloat32("llama.rope.freq_base", (float)config.RopeTheta);
        gguf.AddFloat32("llama.attention.layer_norm_rms_epsilon", (float)config.RmsNormEps);
        gguf.AddUInt32("llama.vocab_size", (uint)config.VocabSize);

        gguf.AddString("tokenizer.ggml.model", "gpt2");
        gguf.AddString("tokenizer.ggml.pre", vocabulary.PreTokenizer);
        gguf.AddStrings("tokenizer.ggml.tokens", vocabulary.Tokens);
        gguf.AddInt32s("tokenizer.ggml.token_type", vocabulary.TokenTypes);
        gguf.AddStrings("tokenizer.ggml.merges", vocabulary.Merges);
        gguf.AddUInt32("tokenizer.ggml.bos_token_id", (uint)config.BosTokenId);
        if (config.EosTokenIds.Length > 0)
            gguf.AddUInt32("tokenizer.ggml.eos_token_id", (uint)config.EosTokenIds[0]);
        if (config.PadTokenId is { } pad)
            gguf.AddUInt32("tokenizer.ggml.padding_token_id", (uint)pad);
        gguf.AddBool("tokenizer.ggml.add_bos_token", vocabulary.AddBos);
        gguf.AddBool("tokenizer.ggml.add_eos_token", false);

        var matrixType = precision == Precision.Fp16 ? GgufTensorType.F16 : GgufTensorType.F32;
        foreach (var tensor in HfTensors.For(config))
        {
            var (name, permuteHeads) = GgufName(tensor.Name, config);
            var type = tensor.Shape.Length == 1 ? GgufTensorType.F32 : matrixType;
            gguf.AddTensor(name, tensor.Shape, type, () =>
            {
                var values = weights.Read(tensor.Name, tensor.Shape);
                return permuteHeads > 0 ? InterleaveRotaryHalves(values, permuteHeads, config.HeadDim, (int)tensor.Shape[1]) : values;
            });
        }
        StagedFolder.WriteFile(outputFile, overwrite, gguf.Write);
    }

    /// <summary>llama.cpp's name for a Hugging Face tensor, and for q/k projections the number of heads to re-order.</summary>
    private static (string Name, int PermuteHeads) GgufName(string hfName, HfConfig config)
    {
        switch (hfName)
        {
            case "model.embed_tokens.weight": return ("token_embd.weight", 0);
            case "model.norm.weight": return ("output_norm.weight", 0);
            case "lm_head.weight": return ("output.weight", 0);
        }
        const string layers = "model.layers.";
        if (!hfName.StartsWith(layers, StringComparison.Ordinal))
            throw new ModelBuildException($"no GGUF name for tensor '{hfName}'");
        var dot = hfName.IndexOf('.', layers.Length);
        var block = $"blk.{hfName[layers.Length..dot]}.";
        return hfName[(dot + 1)..] switch
        {
            "input_layernorm.weight" => (block + "attn_norm.weight", 0),
            "self_attn.q_proj.weight" => (block + "attn_q.weight", config.NumAttentionHeads),
            "self_attn.k_proj.weight" => (block + "attn_k.weight", config.NumKeyValueHeads),
            "self_attn.v_proj.weight" => (block + "attn_v.weight", 0),
            "self_attn.o_proj.weight" => (block + "attn_output.weight", 0),
            "post_attention_layernorm.weight" => (block + "ffn_norm.weight", 0),
            "mlp.gate_proj.weight" => (block + "ffn_gate.weight", 0),
            "mlp.up_proj.weight" => (block + "ffn_up.weight", 0),
            "mlp.down_proj.weight" => (block + "ffn_down.weight", 0),
            var rest => throw new ModelBuildException($"no GGUF name for tensor '{hfName}' ({rest})"),
        };
    }

    /// <summary>
    /// Hugging Face's Llama rotates the first half of each head's dimensions against the second
    /// half; llama.cpp's "llama" architecture rotates neighbouring pairs. Re-ordering the output
    /// rows of q and k within each head (row i of the first half and row i of the second half
    /// become rows 2i and 2i+1) makes the two compute the same attention scores.
    /// </summary>
    private static float[] InterleaveRotaryHalves(float[] weight, int heads, int headDim, int columns)
    {
        var result = new float[weight.Length];
        var half = headDim / 2;
        for (var head = 0; head < heads; head++)
        {
            for (var i = 0; i < half; i++)
            {
                for (var part = 0; part < 2; part++)
                {
                    var source = (head * headDim + part * half + i) * columns;
                    var target = (head * headDim + 2 * i + part) * columns;
                    weight.AsSpan(source, columns).CopyTo(result.AsSpan(target, columns));
                }
            }
        }
        return result;
    }
}
