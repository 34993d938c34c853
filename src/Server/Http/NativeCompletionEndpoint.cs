using InferenceServer.Engine;
using Microsoft.AspNetCore.Http;

namespace InferenceServer.Server.Http;

/// <summary>
/// POST /completion, llama.cpp's own completion endpoint (Tabby's "llama.cpp/completion" kind calls
/// it): the prompt is a string, whose special tokens' text (a FIM marker) is read as those tokens, or
/// an array of token ids. The other fields and the result are /infill's (<see cref="LlamaCppGeneration"/>);
/// token healing is off unless asked for.
/// </summary>
internal sealed class NativeCompletionEndpoint(ServerOptions options, ServedModels models, ServerState state)
{
    public async Task HandleAsync(HttpContext context)
    {
        using var generation = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted, state.Cutoff);
        var body = await HttpApi.ReadJsonAsync(context, OpenAiJsonContext.Default.NativeCompletionRequest, options.MaxRequestBodyBytes, state.Cutoff).ConfigureAwait(false);
        var model = OpenAiGeneration.Find(models, body.Model);
        var llamaCpp = new LlamaCppGeneration(model);
        var stop = RequestFields.Stop(body.Stop, options.Limits.MaxStopStrings);
        var prompt = RequestFields.Prompt(body.Prompt);
        var (maxTokens, defaultMax) = llamaCpp.Limits(body);
        GenerationRequest request;
        try
        {
            request = GenerationRequests.Build(model, options.Limits, prompt, LlamaCppGeneration.Sampling(body), maxTokens, stop, [],
                body.Priority ?? 0, null, defaultMax, body.TokenHealing ?? false);
        }
        catch (RequestException e)
        {
            throw HttpApiException.From(e);
        }
        await llamaCpp.RunAsync(context, LlamaCppGeneration.Apply(request, body), body, truncated: false, generation.Token).ConfigureAwait(false);
    }
}
