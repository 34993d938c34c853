using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using InferenceServer.Engine;
using InferenceServer.Engine.Sampling;
using Microsoft.AspNetCore.Http;

namespace InferenceServer.Server.Http;

/// <summary>
/// What /v1/completions and /v1/chat/completions share: OpenAI's own checks, the sampling fields, the shared
/// validation (GenerationRequests.Build), submission, and reading the output whole or as server-sent events.
/// </summary>
internal sealed class OpenAiGeneration(ServerOptions options, ServedModels models)
{
    /// <summary>
    /// A request from body to answer: read <typeparamref name="TBody"/>, <paramref name="prepare"/> it into an engine
    /// request (with an id made from <paramref name="idPrefix"/>) for the model or adapter its <c>model</c> names,
    /// submit it, and let <paramref name="answer"/> write the output. The client leaving or the shutdown's cutoff ends the generation; the output is still read (with
    /// the client's token only), so a cutoff ends the response with an error, not a reset.
    /// </summary>
    public async Task RunAsync<TBody>(HttpContext context, ServerState state, JsonTypeInfo<TBody> type, string idPrefix,
        Func<TBody, string, ServedModel, GenerationRequest> prepare, Func<TBody, GenerationOutput, string, long, ServedModel, Task> answer)
        where TBody : OpenAiSamplingRequest
    {
        using var generation = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted, state.Cutoff);
        var body = await HttpApi.ReadJsonAsync(context, type, options.MaxRequestBodyBytes, state.Cutoff).ConfigureAwait(false);
        var id = idPrefix + Guid.NewGuid().ToString("N");
        var model = Find(models, body.Model);
        var output = Submit(model, prepare(body, id, model), generation.Token);
        await answer(body, output, id, HttpApi.Now(), model).ConfigureAwait(false);
    }

    /// <summary>
    /// The model or adapter a body's <c>model</c> names (a request may leave it out, as with gRPC:
    /// the first model served); an unknown one is a 404 model_not_found.
    /// </summary>
    public static ServedModel Find(ServedModels models, string? name)
    {
        ArgumentNullException.ThrowIfNull(models);
        try
        {
            return models.Find(name);
        }
        catch (RequestException e)
        {
            throw HttpApiException.From(e);
        }
    }

    /// <summary>n must be 1; logit_bias must be empty.</summary>
    public static void CheckCommon(OpenAiSamplingRequest body)
    {
        if (body.N is { } n && n != 1)
            throw HttpApiException.BadRequest($"n must be 1 (this server returns one choice per request), got {n}", "n");
        if (body.LogitBias.ValueKind is not (JsonValueKind.Undefined or JsonValueKind.Null or JsonValueKind.Object))
            throw HttpApiException.BadRequest($"logit_bias must be an object, got a JSON {body.LogitBias.ValueKind.ToString().ToLowerInvariant()}", "logit_bias");
        if (body.LogitBias.ValueKind == JsonValueKind.Object && body.LogitBias.EnumerateObject().Any())
            throw HttpApiException.BadRequest("logit_bias is not supported", "logit_bias");
    }

    /// <summary>The engine request, with the same shared validation as gRPC; <paramref name="logprobs"/> alternatives asked for.</summary>
    public GenerationRequest Build(ServedModel model, OpenAiSamplingRequest body, PromptInput prompt, string id, int? logprobs, int? maxTokens, bool? tokenHealing)
    {
        var stop = RequestFields.Stop(body.Stop, options.Limits.MaxStopStrings);
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
            var request = GenerationRequests.Build(model, options.Limits, prompt, sampling, maxTokens, stop, [], body.Priority ?? 0, id, options.DefaultMaxTokens, tokenHealing);
            return body.IgnoreEos == true ? request with { IgnoreEos = true } : request;
        }
        catch (RequestException e)
        {
            throw HttpApiException.From(e);
        }
    }

    private static GenerationOutput Submit(ServedModel model, GenerationRequest request, CancellationToken cancellation)
    {
        try
        {
            return model.Engine.Submit(request, cancellation);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            throw HttpApiException.From(e);
        }
    }

    /// <summary>The whole result, or null when the client left; a generation the shutdown cut off is a 503.</summary>
    public static async Task<GenerationResult?> CollectAsync(HttpContext context, GenerationOutput output)
    {
        GenerationResult result;
        try
        {
            result = await output.CollectAsync(context.RequestAborted).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            return null; // the client left; leaving the output unread cancelled the generation
        }
        RequestRecord.SetUsage(context, result.Usage);
        if (result.FinishReason == FinishReason.Cancelled)
            throw HttpApiException.ShuttingDown();
        return result;
    }

    /// <summary>
    /// Server-sent events: <paramref name="onText"/> for each event that carries output (it returns the chunk to
    /// send, or null for none), then <paramref name="onFinish"/>'s chunks for the final event, then data: [DONE].
    /// A generation the shutdown cut off sends an error event instead of the final chunks.
    /// </summary>
    public static async Task StreamAsync<TChunk>(HttpContext context, GenerationOutput output, JsonTypeInfo<TChunk> type,
        Func<GenerationEvent, TChunk?> onText, Func<GenerationEvent, IEnumerable<TChunk>> onFinish)
        where TChunk : class
    {
        await HttpApi.StreamEventsAsync(context, output,
            async (writer, e) =>
            {
                if (onText(e) is { } chunk)
                    await HttpApi.WriteEventAsync(context, writer, chunk, type).ConfigureAwait(false);
            },
            async (writer, e) =>
            {
                foreach (var last in onFinish(e))
                    await HttpApi.WriteEventAsync(context, writer, last, type).ConfigureAwait(false);
            },
            endWithDone: true).ConfigureAwait(false);
    }

    public static string FinishName(FinishReason reason) => reason == FinishReason.Length ? "length" : "stop";

    public static CompletionUsage UsageOf(Usage usage) => new()
    {
        PromptTokens = usage.PromptTokens,
        CompletionTokens = usage.CompletionTokens,
        TotalTokens = usage.PromptTokens + usage.CompletionTokens,
        PromptTokensDetails = new PromptTokensDetails { CachedTokens = usage.CachedPromptTokens },
    };
}
