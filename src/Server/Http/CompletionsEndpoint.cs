using System.Text.Json;
using InferenceServer.Engine;
using InferenceServer.Engine.Sampling;
using Microsoft.AspNetCore.Http;

namespace InferenceServer.Server.Http;

/// <summary>POST /v1/completions: OpenAI's legacy completions, whole or as server-sent events.</summary>
internal sealed class CompletionsEndpoint(ServerOptions options, ServedModel model, ServerState state)
{
    public async Task HandleAsync(HttpContext context)
    {
        // The client leaving or the shutdown's cutoff ends the generation; the output is still read
        // (with the client's token only), so a cutoff ends the response with an error, not a reset.
        using var generation = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted, state.Cutoff);
        var body = await HttpApi.ReadJsonAsync(context, OpenAiJsonContext.Default.CompletionRequest, options.MaxRequestBodyBytes, state.Cutoff).ConfigureAwait(false);
        var id = "cmpl-" + Guid.NewGuid().ToString("N");
        var request = Prepare(body, id, out var logprobs);
        GenerationOutput output;
        try
        {
            output = model.Engine.Submit(request, generation.Token);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            throw HttpApiException.From(e);
        }
        var created = HttpApi.Now();
        if (body.Stream == true)
            await StreamAsync(context, output, id, created, logprobs, body.StreamOptions?.IncludeUsage == true).ConfigureAwait(false);
        else
            await CompleteAsync(context, output, id, created, logprobs).ConfigureAwait(false);
    }

    /// <summary>The engine request, with the same shared validation as gRPC; OpenAI's own limits checked first.</summary>
    private GenerationRequest Prepare(CompletionRequest body, string id, out int? logprobs)
    {
        // One model per server: a request may leave the name out (as with gRPC), but a wrong one is an error.
        if (!string.IsNullOrEmpty(body.Model) && !string.Equals(body.Model, model.Name, StringComparison.Ordinal))
        {
            throw new HttpApiException(404, "invalid_request_error",
                $"The model '{body.Model}' does not exist; this server serves '{model.Name}'", "model", "model_not_found");
        }
        if (body.N is { } n && n != 1)
            throw HttpApiException.BadRequest($"n must be 1 (this server returns one choice per request), got {n}", "n");
        if (body.BestOf is { } bestOf && bestOf != 1)
            throw HttpApiException.BadRequest($"best_of must be 1, got {bestOf}", "best_of");
        if (body.Echo == true)
            throw HttpApiException.BadRequest("echo is not supported", "echo");
        if (body.LogitBias.ValueKind is not (JsonValueKind.Undefined or JsonValueKind.Null or JsonValueKind.Object))
            throw HttpApiException.BadRequest($"logit_bias must be an object, got a JSON {body.LogitBias.ValueKind.ToString().ToLowerInvariant()}", "logit_bias");
        if (body.LogitBias.ValueKind == JsonValueKind.Object && body.LogitBias.EnumerateObject().Any())
            throw HttpApiException.BadRequest("logit_bias is not supported", "logit_bias");
        if (body.Logprobs is { } requested && (requested < 0 || requested > LogprobsBuilder.MaxLogprobs))
            throw HttpApiException.BadRequest($"logprobs must be between 0 and {LogprobsBuilder.MaxLogprobs}, got {requested}", "logprobs");
        logprobs = body.Logprobs;

        var stop = RequestFields.Stop(body.Stop, options.Limits.MaxStopStrings);
        var prompt = RequestFields.Prompt(body.Prompt);
        if (body.Suffix is { } suffix && (suffix.Length > 0 || model.Fim is not null))
        {
            // Fill in the middle: the prompt is the prefix. An empty suffix on a model without FIM is just a completion.
            if (prompt is not PromptInput.Text text)
                throw HttpApiException.BadRequest("suffix needs a text prompt (the prefix), not token ids", "suffix");
            prompt = new PromptInput.Infill(text.Value, suffix);
        }
        var sampling = new SamplingParameters
        {
            Temperature = body.Temperature ?? 1.0,
            TopP = body.TopP ?? 1.0,
            TopK = body.TopK is -1 ? 0 : body.TopK ?? 0,
            MinP = body.MinP ?? 0,
            FrequencyPenalty = body.FrequencyPenalty ?? 0,
            PresencePenalty = body.PresencePenalty ?? 0,
            RepetitionPenalty = body.RepetitionPenalty ?? 1.0,
            Seed = body.Seed is { } seed ? unchecked((ulong)seed) : null,
            // logprobs=0 still reports the chosen token's logprob, which the engine computes when asked for one alternative.
            Logprobs = logprobs is { } k ? Math.Max(1, k) : 0,
        };
        try
        {
            var request = GenerationRequests.Build(model, options.Limits, prompt, sampling, body.MaxTokens, stop, [], body.Priority ?? 0, id, options.DefaultMaxTokens, body.TokenHealing);
            return body.IgnoreEos == true ? request with { IgnoreEos = true } : request;
        }
        catch (RequestException e)
        {
            throw HttpApiException.From(e);
        }
    }

    private async Task CompleteAsync(HttpContext context, GenerationOutput output, string id, long created, int? logprobs)
    {
        GenerationResult result;
        try
        {
            result = await output.CollectAsync(context.RequestAborted).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            return; // the client left; leaving the output unread cancelled the generation
        }
        RequestRecord.SetUsage(context, result.Usage);
        if (result.FinishReason == FinishReason.Cancelled)
            throw HttpApiException.ShuttingDown();
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
                    FinishReason = FinishName(result.FinishReason),
                },
            ],
            Usage = UsageOf(result.Usage),
        };
        await HttpApi.WriteJsonAsync(context, StatusCodes.Status200OK, response, OpenAiJsonContext.Default.CompletionResponse).ConfigureAwait(false);
    }

    /// <summary>
    /// data: chunks with the new text, then one with the finish reason (and empty text), then, with
    /// stream_options.include_usage, one with the usage and no choices; then data: [DONE].
    /// </summary>
    private async Task StreamAsync(HttpContext context, GenerationOutput output, string id, long created, int? logprobs, bool includeUsage)
    {
        HttpApi.StartEventStream(context);
        var builder = logprobs is { } k ? new LogprobsBuilder(model.Tokenizer, k) : null;
        var type = OpenAiJsonContext.Default.CompletionResponse;
        using var writer = HttpApi.CreateWriter(context.Response.BodyWriter);
        try
        {
            // Send the headers now: a client sees the stream open even while the request waits in the queue.
            await context.Response.BodyWriter.FlushAsync(context.RequestAborted).ConfigureAwait(false);
            await foreach (var e in output.WithCancellation(context.RequestAborted).ConfigureAwait(false))
            {
                if (e.Text.Length > 0 || (builder is not null && e.Logprobs is { Count: > 0 }))
                {
                    var chunk = Chunk(id, created, new CompletionChoice
                    {
                        Text = e.Text,
                        Logprobs = builder is not null && e.Logprobs is { Count: > 0 } items ? builder.Build(items) : null,
                    });
                    await HttpApi.WriteEventAsync(context, writer, chunk, type).ConfigureAwait(false);
                }
                if (!e.IsFinal)
                    continue;
                RequestRecord.SetUsage(context, e.Usage!.Value);
                if (e.FinishReason == FinishReason.Cancelled)
                {
                    await HttpApi.WriteEventAsync(context, writer, HttpApi.ErrorBody(HttpApiException.ShuttingDown()), OpenAiJsonContext.Default.ErrorResponse).ConfigureAwait(false);
                    break;
                }
                var last = Chunk(id, created, new CompletionChoice { Text = "", FinishReason = FinishName(e.FinishReason!.Value) });
                await HttpApi.WriteEventAsync(context, writer, last, type).ConfigureAwait(false);
                if (includeUsage)
                {
                    var usage = new CompletionResponse { Id = id, Created = created, Model = model.Name, Choices = [], Usage = UsageOf(e.Usage!.Value) };
                    await HttpApi.WriteEventAsync(context, writer, usage, type).ConfigureAwait(false);
                }
                break;
            }
            await HttpApi.WriteDoneAsync(context).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            // The client went away: leaving the loop abandoned the output, which frees the sequence.
        }
    }

    private CompletionResponse Chunk(string id, long created, CompletionChoice choice) =>
        new() { Id = id, Created = created, Model = model.Name, Choices = [choice] };


    private static string FinishName(FinishReason reason) => reason == FinishReason.Length ? "length" : "stop";

    private static CompletionUsage UsageOf(Usage usage) => new()
    {
        PromptTokens = usage.PromptTokens,
        CompletionTokens = usage.CompletionTokens,
        TotalTokens = usage.PromptTokens + usage.CompletionTokens,
        PromptTokensDetails = new PromptTokensDetails { CachedTokens = usage.CachedPromptTokens },
    };
}
