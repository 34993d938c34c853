using InferenceServer.Engine.Sampling;

namespace InferenceServer.Engine;

/// <summary>One generation: prompt tokens in, a stream of text and token ids out.</summary>
public sealed record GenerationRequest
{
    public required IReadOnlyList<int> PromptTokens { get; init; }
    public SamplingParameters Sampling { get; init; } = SamplingParameters.Greedy;

    /// <summary>Most tokens to generate.</summary>
    public int MaxTokens { get; init; } = 16;

    /// <summary>Text that ends generation; it is not part of the output.</summary>
    public IReadOnlyList<string> StopStrings { get; init; } = [];

    /// <summary>Token ids that end generation, besides the model's end-of-sequence ids.</summary>
    public IReadOnlyList<int> StopTokenIds { get; init; } = [];

    /// <summary>Keep generating past the model's end-of-sequence ids.</summary>
    public bool IgnoreEos { get; init; }

    /// <summary>
    /// Token healing: the prompt's last token is taken back and the first generated tokens spell
    /// its bytes again, choosing how to split them (see <see cref="Tokenizer.TokenHealing"/>). Those
    /// bytes are not output, and the tokens that spell them do not count toward
    /// <see cref="MaxTokens"/>. A prompt that ends in a control token, or a tokenizer that is not
    /// byte-level, is served as it is.
    /// </summary>
    public bool HealPromptEnd { get; init; }

    /// <summary>Higher runs first; equal priorities run first come, first served.</summary>
    public int Priority { get; init; }

    /// <summary>
    /// Compute the prompt and end without generating: a cache warm-up. The prompt's KV stays in
    /// the prefix cache like any finished sequence's; the output has no tokens and finishes with
    /// <see cref="FinishReason.Length"/>.
    /// </summary>
    public bool PrefillOnly { get; init; }

    /// <summary>
    /// When positive, a line of the output (after its first newline) whose indentation, in spaces
    /// and tabs, is less than this ends the generation: the output stops after that line's
    /// indentation, and the generation finishes with <see cref="FinishReason.Length"/>.
    /// </summary>
    public int MinLineIndent { get; init; }

    /// <summary>
    /// Once this much time has passed since the first generated token, the generation ends with
    /// the next token whose text holds a newline (<see cref="FinishReason.Length"/>); null for no limit.
    /// </summary>
    public TimeSpan? NewlineTimeLimit { get; init; }

    public string? RequestId { get; init; }

    /// <summary>
    /// The LoRA adapter the sequence runs with: an id the model gave when it loaded the adapter
    /// (<see cref="Model.DecoderRunner.LoadAdapter"/>), or 0 for the base model alone. KV computed
    /// with an adapter is that adapter's: prefix reuse never crosses adapters.
    /// </summary>
    public int AdapterId { get; init; }
}

/// <summary>Why a generation ended.</summary>
public enum FinishReason
{
    /// <summary>Reached MaxTokens or the context length.</summary>
    Length,

    /// <summary>An end-of-sequence id, a stop token id or a stop string.</summary>
    Stop,

    /// <summary>The consumer cancelled or stopped reading.</summary>
    Cancelled,
}

/// <summary>Token counts and timings of a finished generation.</summary>
public readonly record struct Usage(
    int PromptTokens,
    int CompletionTokens,
    int CachedPromptTokens,
    TimeSpan QueueTime,
    TimeSpan TimeToFirstToken);

/// <summary>
/// Output so far: new text and token ids since the previous event (several tokens when the
/// consumer reads slower than the engine generates), then, once, the finish reason and usage.
/// </summary>
public sealed record GenerationEvent(
    string Text,
    IReadOnlyList<int> TokenIds,
    IReadOnlyList<TokenLogprobs>? Logprobs,
    FinishReason? FinishReason,
    Usage? Usage,
    string? MatchedStop)
{
    public bool IsFinal => FinishReason is not null;
}

/// <summary>A generated token's log-probability and the most likely alternatives at its position.</summary>
public sealed record TokenLogprobs(int TokenId, float Logprob, IReadOnlyList<TopLogprob> TopAlternatives);

/// <summary>
/// Why a request failed, in terms of no protocol: each front end maps a code to its own (an HTTP
/// status and OpenAI error type, a gRPC status).
/// </summary>
public enum RequestErrorCode
{
    /// <summary>The request itself is wrong: a bad parameter, a prompt too long, an unknown token.</summary>
    InvalidArgument,

    /// <summary>What the request names does not exist (a model, a route).</summary>
    NotFound,

    /// <summary>Too much at once: the queue is full, or a message is too large; try again later.</summary>
    ResourceExhausted,

    /// <summary>The server cannot take it now (loading, draining, stopped).</summary>
    Unavailable,

    /// <summary>The caller gave up.</summary>
    Cancelled,

    /// <summary>The caller's time ran out first.</summary>
    DeadlineExceeded,

    /// <summary>No valid credentials.</summary>
    Unauthenticated,

    /// <summary>Asked for something this server does not do.</summary>
    Unimplemented,

    /// <summary>A failure of the server's own.</summary>
    Internal,
}

/// <summary>A request the engine did not take, with the code front ends answer with; nothing was queued.</summary>
public abstract class RequestRefusedException(RequestErrorCode code, string message) : Exception(message)
{
    public RequestErrorCode Code { get; } = code;
}

/// <summary>The request cannot be served as asked (the message says why).</summary>
public sealed class RequestValidationException(string message) : RequestRefusedException(RequestErrorCode.InvalidArgument, message);

/// <summary>The waiting queue is full; try again later.</summary>
public sealed class EngineOverloadedException(string message) : RequestRefusedException(RequestErrorCode.ResourceExhausted, message);

/// <summary>The engine is shutting down and takes no new requests.</summary>
public sealed class EngineStoppedException(string message) : RequestRefusedException(RequestErrorCode.Unavailable, message);

/// <summary>
/// The engine failed while the request was in it (a model step threw): the request ends without a
/// final event, and the engine takes no more requests. <see cref="Exception.InnerException"/> is
/// the failure; the message is safe to log, not meant for clients.
/// </summary>
public sealed class EngineFaultedException(Exception fault)
    : Exception($"the engine stopped after an error: {fault?.Message}", fault);
