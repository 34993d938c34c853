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

    /// <summary>
    /// A prompt alone in the engine (nothing else running or waiting) is prefilled without the
    /// time budget, in one run that is ended early (and its work dropped) when the prompt is
    /// cancelled, or when another request arrives while more than a budget of it is left: nobody
    /// waits behind it, and it does not pay for a pass over the weights per budget-sized chunk.
    /// Needs a time budget and a model whose runs can be interrupted (the dense CPU runner);
    /// otherwise ignored.
    /// </summary>
    public bool InterruptibleLonePrompts { get; init; } = true;

    /// <summary>KV cache budget in bytes; 0 uses all the model's slots. Counted in blocks of <see cref="KvBlockTokens"/>.</summary>
    public long KvCacheBytes { get; init; }

    /// <summary>Tokens per KV block.</summary>
    public int KvBlockTokens { get; init; } = 16;

    /// <summary>Requests that may wait for admission; past this, submission fails at once.</summary>
    public int MaxWaitingRequests { get; init; } = 256;

    /// <summary>
    /// Tokens drafted by prompt lookup (<see cref="Speculation.PromptLookupDrafter"/>) for a
    /// decoding sequence and checked in the same step (<see cref="Speculation.DraftVerifier"/>);
    /// 0, the default, turns speculation off. Dense models whose graph has the logits_to_keep
    /// input only; the paged path ignores it. Off by default because on a 2-core CPU with an int4
    /// model the verification step costs nearly as much as the tokens it saves.
    /// </summary>
    public int SpeculativeDraftTokens { get; init; }

    /// <summary>
    /// Speculation drafts only while at most this many sequences decode: on the dense path a
    /// verification row runs as its own batch-1 step beside the batched decode, which pays when
    /// one or two sequences decode and costs more than it saves in a full batch.
    /// </summary>
    public int SpeculativeMaxDecodes { get; init; } = 2;

    /// <summary>End-of-sequence ids (from the model's config).</summary>
    public IReadOnlyList<int> EosTokenIds { get; init; } = [];
}
