using System.Text.Json;
using System.Text.Json.Serialization;

namespace InferenceServer.Server.Http;

// Wire types of the HTTP front end. Names are snake_case on the wire (the context's naming policy).
// Requests keep fields whose JSON type varies (prompt, stop) as JsonElement and interpret them in code,
// so a wrong shape gets a message that names the field.

/// <summary>The fields OpenAI's completions and chat completions share, with vLLM-style sampling extensions.</summary>
internal abstract class OpenAiSamplingRequest
{
    public string? Model { get; set; }
    public int? MaxTokens { get; set; }
    public double? Temperature { get; set; }
    public double? TopP { get; set; }
    public int? TopK { get; set; }
    public double? MinP { get; set; }
    public double? FrequencyPenalty { get; set; }
    public double? PresencePenalty { get; set; }
    public double? RepetitionPenalty { get; set; }
    public long? Seed { get; set; }

    /// <summary>A string or an array of strings (as many as <see cref="RequestLimits.MaxStopStrings"/>).</summary>
    public JsonElement Stop { get; set; }

    public int? N { get; set; }
    public bool? Stream { get; set; }
    public StreamOptions? StreamOptions { get; set; }
    public JsonElement LogitBias { get; set; }
    public string? User { get; set; }

    /// <summary>Extension (as vLLM): keep generating past the model's end-of-sequence tokens.</summary>
    public bool? IgnoreEos { get; set; }

    /// <summary>Extension (as vLLM): higher runs first, within the server's allowed range (default 0).</summary>
    public int? Priority { get; set; }
}

/// <summary>POST /v1/completions (OpenAI's legacy completions).</summary>
internal sealed class CompletionRequest : OpenAiSamplingRequest
{
    /// <summary>A string, an array of token ids, or an array holding exactly one of either.</summary>
    public JsonElement Prompt { get; set; }

    /// <summary>Text after the insertion point: the prompt becomes a fill-in-the-middle prefix.</summary>
    public string? Suffix { get; set; }

    public int? Logprobs { get; set; }
    public int? BestOf { get; set; }
    public bool? Echo { get; set; }

    /// <summary>Extension: spell the prompt's last token again (default: on with a suffix, off without).</summary>
    public bool? TokenHealing { get; set; }
}

/// <summary>POST /v1/chat/completions: the prompt is the model's chat template rendered with the messages.</summary>
internal sealed class ChatCompletionRequest : OpenAiSamplingRequest
{
    /// <summary>[{role, content}]: content a string or an array of {type: "text", text} parts.</summary>
    public JsonElement Messages { get; set; }

    /// <summary>OpenAI's newer name for max_tokens; wins when both are given.</summary>
    public int? MaxCompletionTokens { get; set; }

    public bool? Logprobs { get; set; }
    public int? TopLogprobs { get; set; }
}

internal sealed class ChatCompletionResponse
{
    public required string Id { get; init; }
    public string Object { get; init; } = "chat.completion";
    public required long Created { get; init; }
    public required string Model { get; init; }
    public required IReadOnlyList<ChatChoice> Choices { get; init; }
    public CompletionUsage? Usage { get; init; }
}

internal sealed class ChatChoice
{
    public int Index { get; init; }

    /// <summary>The whole answer (a chat.completion); null in a chunk.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public ChatMessageBody? Message { get; init; }

    /// <summary>The new part of the answer (a chat.completion.chunk); null in a whole answer.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public ChatMessageBody? Delta { get; init; }

    public ChatLogprobs? Logprobs { get; init; }
    public string? FinishReason { get; init; }
}

internal sealed class ChatMessageBody
{
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Role { get; init; }

    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Content { get; init; }
}

/// <summary>Chat logprobs: {content: [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]}.</summary>
internal sealed class ChatLogprobs
{
    public required IReadOnlyList<ChatTokenLogprob> Content { get; init; }
}

internal sealed class ChatTokenLogprob
{
    public required string Token { get; init; }
    public float Logprob { get; init; }
    public IReadOnlyList<int>? Bytes { get; init; }

    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public IReadOnlyList<ChatTokenLogprob>? TopLogprobs { get; init; }
}

internal sealed class StreamOptions
{
    public bool? IncludeUsage { get; set; }
}

internal sealed class CompletionResponse
{
    public required string Id { get; init; }
    public string Object { get; init; } = "text_completion";
    public required long Created { get; init; }
    public required string Model { get; init; }
    public required IReadOnlyList<CompletionChoice> Choices { get; init; }
    public CompletionUsage? Usage { get; init; }
}

internal sealed class CompletionChoice
{
    public int Index { get; init; }
    public required string Text { get; init; }
    public CompletionLogprobs? Logprobs { get; init; }
    public string? FinishReason { get; init; }
}

/// <summary>OpenAI's legacy logprobs object: parallel lists, one entry per generated token.</summary>
internal sealed class CompletionLogprobs
{
    public required IReadOnlyList<string> Tokens { get; init; }
    public required IReadOnlyList<float> TokenLogprobs { get; init; }
    public required IReadOnlyList<Dictionary<string, float>> TopLogprobs { get; init; }
    public required IReadOnlyList<int> TextOffset { get; init; }
}

internal sealed class CompletionUsage
{
    public int PromptTokens { get; init; }
    public int CompletionTokens { get; init; }
    public int TotalTokens { get; init; }
    public required PromptTokensDetails PromptTokensDetails { get; init; }
}

internal sealed class PromptTokensDetails
{
    public int CachedTokens { get; init; }
}

internal sealed class ModelList
{
    public string Object { get; init; } = "list";
    public required IReadOnlyList<ModelCard> Data { get; init; }
}

internal sealed class ModelCard
{
    public required string Id { get; init; }
    public string Object { get; init; } = "model";
    public long Created { get; init; }
    public string OwnedBy { get; init; } = "inferenceserver";

    /// <summary>Extension: the most tokens a prompt plus its completion may have.</summary>
    public int ContextLength { get; init; }

    /// <summary>The base model (vLLM's root): the model itself, or the one an adapter runs on.</summary>
    public string? Root { get; init; }

    /// <summary>For an adapter, its base model; null (written as null, as vLLM does) for a base model.</summary>
    public string? Parent { get; init; }
}

internal sealed class HealthResponse
{
    public required string Status { get; init; }

    /// <summary>When degraded: the models whose engine failed (their requests get 503).</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public IReadOnlyList<string>? FaultedModels { get; init; }
}

/// <summary>GET /admin/engine: the scheduler's counts as of its latest iteration.</summary>
internal sealed class EngineStatus
{
    public required int Running { get; init; }
    public required int Waiting { get; init; }
    public required int KvBlocksUsed { get; init; }
    public required int KvBlocksCached { get; init; }
    public required int KvBlocksFree { get; init; }
    public required int KvBlockTokens { get; init; }
    public required long Iterations { get; init; }
    public required long Cancellations { get; init; }
    public required long LateCancellations { get; init; }

    /// <summary>Prefill runs of a prompt alone in the engine that were ended early (it was cancelled, or another request arrived).</summary>
    public required long InterruptedPrefills { get; init; }
}

internal sealed class ErrorResponse
{
    public required ErrorBody Error { get; init; }
}

internal sealed class ErrorBody
{
    public required string Message { get; init; }
    public required string Type { get; init; }
    public string? Param { get; init; }
    public string? Code { get; init; }
}

/// <summary>
/// The fields llama.cpp's native endpoints (/infill, /completion) share. Fields they take that do
/// not apply here (cache_prompt, id_slot, samplers, n_cmpl, lora, ...) are unknown fields, ignored.
/// </summary>
internal abstract class LlamaCppRequest
{
    /// <summary>Extension: the model or adapter to run (llama.cpp serves one); absent: the first model served.</summary>
    public string? Model { get; set; }

    public int? NPredict { get; set; }
    public double? Temperature { get; set; }
    public int? TopK { get; set; }
    public double? TopP { get; set; }
    public double? MinP { get; set; }
    public double? RepeatPenalty { get; set; }
    public double? PresencePenalty { get; set; }
    public double? FrequencyPenalty { get; set; }

    /// <summary>-1 or absent: random.</summary>
    public long? Seed { get; set; }

    public JsonElement Stop { get; set; }
    public bool? Stream { get; set; }
    public bool? IgnoreEos { get; set; }

    /// <summary>A line after the first newline indented less than this ends the completion.</summary>
    public int? NIndent { get; set; }

    /// <summary>Accepted and not applied, as llama.cpp's server does.</summary>
    public long? TMaxPromptMs { get; set; }

    /// <summary>After this many milliseconds of generating, the completion ends at the next newline.</summary>
    public long? TMaxPredictMs { get; set; }

    /// <summary>Paths ("timings/prompt_n") of the final result's fields to return, flat, under those keys.</summary>
    public IReadOnlyList<string>? ResponseFields { get; set; }

    /// <summary>Extension: spell the prompt's last token again.</summary>
    public bool? TokenHealing { get; set; }

    /// <summary>Extension: higher runs first, within the server's allowed range (default 0).</summary>
    public int? Priority { get; set; }
}

/// <summary>POST /infill as llama.cpp's server takes it (the fields editor plugins send).</summary>
internal sealed class InfillRequest : LlamaCppRequest
{
    public string? InputPrefix { get; set; }
    public string? InputSuffix { get; set; }
    public IReadOnlyList<InfillExtraChunk>? InputExtra { get; set; }

    /// <summary>Text the middle starts with (llama.cpp puts it after the FIM middle token).</summary>
    public string? Prompt { get; set; }
}

/// <summary>POST /completion, llama.cpp's own completion endpoint.</summary>
internal sealed class NativeCompletionRequest : LlamaCppRequest
{
    /// <summary>A string (special tokens' text is parsed) or an array of token ids.</summary>
    public JsonElement Prompt { get; set; }
}

internal sealed class InfillExtraChunk
{
    public string? Filename { get; set; }
    public string? Text { get; set; }
}

/// <summary>A streamed piece of an infill: {index, content, tokens, stop: false}.</summary>
internal sealed class InfillPartial
{
    public int Index { get; init; }
    public required string Content { get; init; }
    public required IReadOnlyList<int> Tokens { get; init; }
    public bool Stop { get; init; }
}

/// <summary>The whole infill (or, streaming, the last event with empty content): llama.cpp's final result fields.</summary>
internal sealed class InfillResult
{
    public int Index { get; init; }
    public required string Content { get; init; }
    public required IReadOnlyList<int> Tokens { get; init; }
    public bool Stop { get; init; } = true;
    public required string Model { get; init; }
    public int TokensPredicted { get; init; }
    public int TokensEvaluated { get; init; }
    public int TokensCached { get; init; }
    public bool Truncated { get; init; }

    /// <summary>"eos" (an end token), "word" (a stop string), "limit" (n_predict or the context), "none".</summary>
    public required string StopType { get; init; }

    public required string StoppingWord { get; init; }
    public required InfillTimings Timings { get; init; }
}

internal sealed class InfillTimings
{
    public int PromptN { get; init; }
    public double PromptMs { get; init; }
    public double PromptPerTokenMs { get; init; }
    public double PromptPerSecond { get; init; }
    public int PredictedN { get; init; }
    public double PredictedMs { get; init; }
    public double PredictedPerTokenMs { get; init; }
    public double PredictedPerSecond { get; init; }
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower)]
[JsonSerializable(typeof(CompletionRequest))]
[JsonSerializable(typeof(CompletionResponse))]
[JsonSerializable(typeof(ChatCompletionRequest))]
[JsonSerializable(typeof(ChatCompletionResponse))]
[JsonSerializable(typeof(ModelList))]
[JsonSerializable(typeof(ModelCard))]
[JsonSerializable(typeof(HealthResponse))]
[JsonSerializable(typeof(EngineStatus))]
[JsonSerializable(typeof(ErrorResponse))]
[JsonSerializable(typeof(InfillRequest))]
[JsonSerializable(typeof(InfillPartial))]
[JsonSerializable(typeof(InfillResult))]
[JsonSerializable(typeof(NativeCompletionRequest))]
[JsonSerializable(typeof(Dictionary<string, JsonElement>))]
internal sealed partial class OpenAiJsonContext : JsonSerializerContext;
