namespace InferenceServer.Model;

/// <summary>How a <see cref="PagedCudaRunner"/> sizes its block pool and its step buffers.</summary>
public sealed record PagedRunnerOptions
{
    public int DeviceId { get; init; }

    /// <summary>Tokens per KV block (the pools' second axis).</summary>
    public int BlockTokens { get; init; } = 16;

    /// <summary>Share of the GPU memory still free after the weights are loaded that the KV pools take.</summary>
    public double KvMemoryFraction { get; init; } = 0.9;

    /// <summary>Blocks per layer pool; 0 sizes the pool from <see cref="KvBytes"/>, else from <see cref="KvMemoryFraction"/>.</summary>
    public int KvBlocks { get; init; }

    /// <summary>Device memory for the KV pools of all layers, keys and values; 0 sizes them from <see cref="KvMemoryFraction"/>.</summary>
    public long KvBytes { get; init; }

    /// <summary>Sequences one step can carry (rows of the block table).</summary>
    public int MaxSequences { get; init; } = 256;

    /// <summary>New tokens one step can carry, all sequences together (prefill chunks and decodes).</summary>
    public int MaxStepTokens { get; init; } = 8192;

    /// <summary>Longest sequence (prompt and completion); 0 means the model's context length.</summary>
    public int MaxSequenceLength { get; init; }
}
