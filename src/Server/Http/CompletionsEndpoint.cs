using InferenceServer.Engine;
using Microsoft.AspNetCore.Http;

namespace InferenceServer.Server.Http;

/// <summary>POST /v1/completions: OpenAI's legacy completions, whole or as server-sent events.</summary>
internal sealed class CompletionsEndpoint(ServerOptions options, ServedModels models, ServerState state)
{
    private readonly OpenAiGeneration _generation = new(options, models);

    public Task HandleAsync(HttpContext context) =>
        _generation.RunAsync(context, state, OpenAiJsonContext.Default.CompletionRequest, "cmpl-", Prepare, (body, output, id, created, model) =>
            body.Stream == true
                ? StreamAsync(context, model, output, id, created, body.Logprobs, body.StreamOptions?.IncludeUsage == true)
                : CompleteAsync(context, model, output, id, created, body.Logprobs));

    /// <summary>The engine request, with the same shared validation as gRPC; OpenAI's own limits checked first.</summary>
    private GenerationRequest Prepare(CompletionRequest body, string id, ServedModel model)
    {
        OpenAiGeneration.CheckCommon(body);
        if (body.BestOf is { } bestOf && bestOf != 1)
            throw HttpApiException.BadRequest($"best_of must be 1, got {bestOf}", "best_of");
        if (body.Echo == true)
            throw HttpApiException.BadRequest("echo is not supported", "echo");
        if (body.Logprobs is { } requested && (requested < 0 || requested > LogprobsBuilder.MaxLogprobs))
            throw HttpApiException.BadRequest($"logprobs must be between 0 and {LogprobsBuilder.MaxLogprobs}, got {requested}", "logprobs");

        var prompt = RequestFields.Prompt(body.Prompt);
        if (body.Suffix is { } suffix && (suffix.Length > 0 || model.Fim is not null))
        {
            // Fill in the middle: the prompt is the prefix. An empty suffix on a model without FIM is just a completion.
            if (prompt is not PromptInput.Text text)
                throw HttpApiException.BadRequest("suffix needs a text prompt (the prefix), not token ids", "suffix");
            prompt = new PromptInput.Infill(text.Value, suffix);
        }
        return _generation.Build(model, body, prompt, id, body.Logprobs, body.MaxTokens, body.TokenHealing);
    }

    private static async Task CompleteAsync(HttpContext context, ServedModel model, GenerationOutput output, string id, long created, int? logprobs)
    {
        if (await OpenAiGeneration.CollectAsync(context, output).ConfigureAwait(false) is not { } result)
            return;
        var response = new CompletionResponse
        {
            Id = id,
            Created = created,
            Model = model.Name,
            Choices =
            [
                new CompletionChoice
                {
                    Text = result.Text,
                    Logprobs = logprobs is { } k ? new LogprobsBuilder(model.Tokenizer, k).Build(result.Logprobs) : null,
                    FinishReason = OpenAiGeneration.FinishName(result.FinishReason),
                },
            ],
            Usage = OpenAiGeneration.UsageOf(result.Usage),
        };
        await HttpApi.WriteJsonAsync(context, StatusCodes.Status200OK, response, OpenAiJsonContext.Default.CompletionResponse).ConfigureAwait(false);
    }

    /// <summary>
    /// data: chunks with the new text, then one with the finish reason (and empty text), then, with
    /// stream_options.include_usage, one with the usage and no choices; then data: [DONE].
    /// </summary>
    private static Task StreamAsync(HttpContext context, ServedModel model, GenerationOutput output, string id, long created, int? logprobs, bool includeUsage)
    {
        var builder = logprobs is { } k ? new LogprobsBuilder(model.Tokenizer, k) : null;
        return OpenAiGeneration.StreamAsync(context, output, OpenAiJsonContext.Default.CompletionResponse,
            e => e.Text.Length > 0 || (builder is not null && e.Logprobs is { Count: > 0 })
                ? Chunk(model.Name, id, created, new CompletionChoice
                {
                    Text = e.Text,
                    Logprobs = builder is not null && e.Logprobs is { Count: > 0 } items ? builder.Build(items) : null,
                })
                : null,
            e => Finish(model.Name, id, created, e, includeUsage));
    }

    private static IEnumerable<CompletionResponse> Finish(string modelName, string id, long created, GenerationEvent e, bool includeUsage)
    {
        yield return Chunk(modelName, id, created, new CompletionChoice { Text = "", FinishReason = OpenAiGeneration.FinishName(e.FinishReason!.Value) });
        if (includeUsage)
            yield return new CompletionResponse { Id = id, Created = created, Model = modelName, Choices = [], Usage = OpenAiGeneration.UsageOf(e.Usage!.Value) };
    }

    private static CompletionResponse Chunk(string modelName, string id, long created, CompletionChoice choice) =>
        new() { Id = id, Created = created, Model = modelName, Choices = [choice] };
}
