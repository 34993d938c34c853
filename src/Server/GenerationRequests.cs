using InferenceServer.Engine;
using InferenceServer.Engine.Sampling;

namespace InferenceServer.Server;

/// <summary>What a client asks to continue: text, token ids, or a prefix and suffix to fill between.</summary>
public abstract record PromptInput
{
    public sealed record Text(string Value) : PromptInput;
    public sealed record TokenIds(IReadOnlyList<int> Ids) : PromptInput;
    public sealed record Infill(string Prefix, string Suffix) : PromptInput;
}

/// <summary>
/// Turns what either front end received into an engine request, with the same checks and messages:
/// the server's own limits (stop strings, stop ids, priority), the prompt built from text, token ids
/// or an infill, and max_tokens resolved against the context. What depends on the model (context
/// length, vocabulary, KV budget) and the sampling parameters is checked once, by the engine, when
/// the request is submitted (<see cref="InferenceEngine.Validate"/>).
/// </summary>
public static class GenerationRequests
{
    public static GenerationRequest Build(
        ServedModel model,
        RequestLimits limits,
        PromptInput? input,
        SamplingParameters sampling,
        int? maxTokens,
        IReadOnlyList<string> stop,
        IReadOnlyList<int> stopTokenIds,
        int priority,
        string? requestId,
        int defaultMaxTokens,
        bool? tokenHealing = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        CheckLimits(limits, stop, stopTokenIds, priority);
        var stopIds = new List<int>(stopTokenIds);
        int[] prompt = input switch
        {
            PromptInput.Text text => model.Tokenizer.Encode(text.Value, addSpecialTokens: true),
            PromptInput.TokenIds ids => [.. ids.Ids],
            PromptInput.Infill infill => BuildInfill(model, infill, stopIds),
            _ => throw new RequestException(RequestErrorCode.InvalidArgument, "a prompt is required (prompt, prompt_token_ids or infill)"),
        };
        if (prompt.Length > 0 && maxTokens is < 0)
            throw new RequestException(RequestErrorCode.InvalidArgument, $"max_tokens must be positive, got {maxTokens}");
        return new GenerationRequest
        {
            PromptTokens = prompt,
            MaxTokens = maxTokens is > 0 ? maxTokens.Value : Math.Min(defaultMaxTokens, Math.Max(1, model.ContextLength - prompt.Length)),
            Sampling = sampling,
            StopStrings = stop,
            StopTokenIds = stopIds,
            Priority = priority,
            RequestId = requestId,
            // On by default where a person's cursor ends the prompt: fill-in-the-middle.
            HealPromptEnd = tokenHealing ?? input is PromptInput.Infill,
            AdapterId = model.AdapterId,
        };
    }

    /// <summary>The server's limits on stop strings, stop ids and priority, checked before anything else.</summary>
    public static void CheckLimits(RequestLimits limits, IReadOnlyList<string> stop, IReadOnlyList<int> stopTokenIds, int priority)
    {
        ArgumentNullException.ThrowIfNull(limits);
        if (limits.CheckStop(stop) is { } stopProblem)
            throw new RequestException(RequestErrorCode.InvalidArgument, stopProblem);
        if (RequestLimits.CheckStopTokenIds(stopTokenIds) is { } idsProblem)
            throw new RequestException(RequestErrorCode.InvalidArgument, idsProblem);
        if (limits.CheckPriority(priority) is { } priorityProblem)
            throw new RequestException(RequestErrorCode.InvalidArgument, priorityProblem);
    }

    /// <summary>What a suffix gets from a model without fill-in-the-middle tokens.</summary>
    public static RequestException NoFillInTheMiddle(ServedModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        return new RequestException(RequestErrorCode.InvalidArgument, $"model '{model.Name}' has no fill-in-the-middle tokens, so it cannot take a suffix");
    }

    private static int[] BuildInfill(ServedModel model, PromptInput.Infill infill, List<int> stopIds)
    {
        var fim = model.Fim ?? throw NoFillInTheMiddle(model);
        stopIds.AddRange(fim.StopIds);
        return fim.Build(model.Tokenizer, infill.Prefix, infill.Suffix);
    }
}
