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

/// <summary>Turns what either front end received into an engine request, with the same checks and messages.</summary>
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
        ArgumentNullException.ThrowIfNull(limits);
        if (limits.CheckStop(stop) is { } stopProblem)
            throw new RequestException(GrpcStatus.InvalidArgument, stopProblem);
        if (RequestLimits.CheckStopTokenIds(stopTokenIds) is { } idsProblem)
            throw new RequestException(GrpcStatus.InvalidArgument, idsProblem);
        if (limits.CheckPriority(priority) is { } priorityProblem)
            throw new RequestException(GrpcStatus.InvalidArgument, priorityProblem);
        var stopIds = new List<int>(stopTokenIds);
        int[] prompt = input switch
        {
            PromptInput.Text text => model.Tokenizer.Encode(text.Value, addSpecialTokens: true),
            PromptInput.TokenIds ids => [.. ids.Ids],
            PromptInput.Infill infill => BuildInfill(model, infill, stopIds),
            _ => throw new RequestException(GrpcStatus.InvalidArgument, "a prompt is required (prompt, prompt_token_ids or infill)"),
        };
        if (prompt.Length == 0)
            throw new RequestException(GrpcStatus.InvalidArgument, "the prompt is empty");
        if (maxTokens is < 0)
            throw new RequestException(GrpcStatus.InvalidArgument, $"max_tokens must be positive, got {maxTokens}");
        var max = maxTokens is > 0 ? maxTokens.Value : Math.Min(defaultMaxTokens, Math.Max(1, model.ContextLength - prompt.Length));
        if (prompt.Length >= model.ContextLength)
            throw new RequestException(GrpcStatus.InvalidArgument,
                $"the prompt is {prompt.Length} tokens; this model's context length is {model.ContextLength}");
        // In 64 bits: max_tokens near int.MaxValue must not wrap around and pass.
        if ((long)prompt.Length + max > model.ContextLength)
            throw new RequestException(GrpcStatus.InvalidArgument,
                $"the prompt ({prompt.Length} tokens) plus max_tokens ({max}) exceeds this model's context length of {model.ContextLength} tokens");
        if (sampling.Validate() is { } problem)
            throw new RequestException(GrpcStatus.InvalidArgument, problem);
        foreach (var id in stopIds)
        {
            if ((uint)id >= (uint)model.VocabSize)
                throw new RequestException(GrpcStatus.InvalidArgument, $"stop token id {id} is outside the vocabulary");
        }
        return new GenerationRequest
        {
            PromptTokens = prompt,
            MaxTokens = max,
            Sampling = sampling,
            StopStrings = stop,
            StopTokenIds = stopIds,
            Priority = priority,
            RequestId = requestId,
            // On by default where a person's cursor ends the prompt: fill-in-the-middle.
            HealPromptEnd = tokenHealing ?? input is PromptInput.Infill,
        };
    }

    private static int[] BuildInfill(ServedModel model, PromptInput.Infill infill, List<int> stopIds)
    {
        var fim = model.Fim ?? throw new RequestException(GrpcStatus.InvalidArgument,
            $"model '{model.Name}' has no fill-in-the-middle tokens, so it cannot take a suffix");
        stopIds.AddRange(fim.StopIds);
        return fim.Build(model.Tokenizer, infill.Prefix, infill.Suffix);
    }
}
