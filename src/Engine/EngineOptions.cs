namespace InferenceServer.Engine;

public sealed record EngineOptions
{
    /// <summary>Tokens one iteration computes at most (running decodes plus prefill chunks).</summary>
    public int MaxBatchTokens { get; init; } = 512;

    /// <summary>Longest prefill chunk; long prompts are split so decodes keep flowing between chunks.</summary>
    public int PrefillChunkTokens { get; init; } = 256;

    /// <summary>KV cache budget in bytes; 0 uses all the model's slots. Counted in blocks of <see cref="KvBlockTokens"/>.</summary>
    public long KvCacheBytes { get; init; }

    /// <summary>Tokens per KV block.</summary>
    public int KvBlockTokens { get; init; } = 16;

    /// <summary>Requests that may wait for admission; past this, submission fails at once.</summary>
    public int MaxWaitingRequests { get; init; } = 256;

    /// <summary>End-of-sequence ids (from the model's config).</summary>
    public IReadOnlyList<int> EosTokenIds { get; init; } = [];
}
