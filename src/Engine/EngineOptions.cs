namespace InferenceServer.Engine;

public sealed record EngineOptions
{
    /// <summary>Tokens one iteration computes at most (running decodes plus prefill chunks).</summary>
    public int MaxBatchTokens { get; init; } = 512;

    /// <summary>Longest prefill chunk; long prompts are split so decodes keep flowing between chunks.</summary>
    public int PrefillChunkTokens { get; init; } = 256;

    /// <summary>
    /// Time an iteration should take at most: prefill chunks are sized from the measured cost of
    /// recent steps so that an iteration with a prompt in it stays within it (at least
    /// <see cref="StepCost.MinPrefillTokens"/> prompt tokens an iteration all the same). Zero: chunks
    /// are sized by tokens alone.
    /// </summary>
    public TimeSpan IterationTimeBudget { get; init; }

    /// <summary>The iteration budget the server and the load generator use unless told otherwise: a keystroke's worth.</summary>
    public static readonly TimeSpan InteractiveIterationBudget = TimeSpan.FromMilliseconds(25);

    /// <summary>KV cache budget in bytes; 0 uses all the model's slots. Counted in blocks of <see cref="KvBlockTokens"/>.</summary>
    public long KvCacheBytes { get; init; }

    /// <summary>Tokens per KV block.</summary>
    public int KvBlockTokens { get; init; } = 16;

    /// <summary>Requests that may wait for admission; past this, submission fails at once.</summary>
    public int MaxWaitingRequests { get; init; } = 256;

    /// <summary>End-of-sequence ids (from the model's config).</summary>
    public IReadOnlyList<int> EosTokenIds { get; init; } = [];
}
