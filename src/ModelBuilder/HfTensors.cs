namespace InferenceServer.ModelBuilder;

/// <summary>One tensor of a Hugging Face Llama/Qwen2 checkpoint: its name and shape ([out, in] for linear weights).</summary>
public sealed record HfTensor(string Name, long[] Shape);

/// <summary>
/// The tensors a Hugging Face checkpoint of a config holds, in the order the transformers
/// library lists them: what a writer of Hugging Face folders or GGUF files has to produce.
/// </summary>
public static class HfTensors
{
    public static IReadOnlyList<HfTensor> For(HfConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        long h = config.HiddenSize, hd = config.HeadDim, inter = config.IntermediateSize, vocab = config.VocabSize;
        long q = config.NumAttentionHeads * hd, kv = config.NumKeyValueHeads * hd;
        var tensors = new List<HfTensor> { new("model.embed_tokens.weight", [vocab, h]) };
        for (var layer = 0; layer < config.NumHiddenLayers; layer++)
        {
            var prefix = $"model.layers.{layer}";
            tensors.Add(new($"{prefix}.input_layernorm.weight", [h]));
            tensors.Add(new($"{prefix}.self_attn.q_proj.weight", [q, h]));
            tensors.Add(new($"{prefix}.self_attn.k_proj.weight", [kv, h]));
            tensors.Add(new($"{prefix}.self_attn.v_proj.weight", [kv, h]));
            if (config.QkvBias)
            {
                tensors.Add(new($"{prefix}.self_attn.q_proj.bias", [q]));
                tensors.Add(new($"{prefix}.self_attn.k_proj.bias", [kv]));
                tensors.Add(new($"{prefix}.self_attn.v_proj.bias", [kv]));
            }
            tensors.Add(new($"{prefix}.self_attn.o_proj.weight", [h, q]));
            tensors.Add(new($"{prefix}.post_attention_layernorm.weight", [h]));
            tensors.Add(new($"{prefix}.mlp.gate_proj.weight", [inter, h]));
            tensors.Add(new($"{prefix}.mlp.up_proj.weight", [inter, h]));
            tensors.Add(new($"{prefix}.mlp.down_proj.weight", [h, inter]));
        }
        tensors.Add(new("model.norm.weight", [h]));
        if (!config.TieWordEmbeddings)
            tensors.Add(new("lm_head.weight", [vocab, h]));
        return tensors;
    }
}
