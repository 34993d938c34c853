using System.Diagnostics.Metrics;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace InferenceServer.Server.Http;

/// <summary>
/// OpenAI-style HTTP: /v1/completions, /v1/chat/completions, /v1/models, llama.cpp's /infill, /health, /admin/engine and
/// Prometheus' /metrics.
/// Every failure answers with OpenAI's error body {"error": {"message", "type", "param", "code"}};
/// that includes unknown routes (404), wrong methods (405), a missing or wrong API key (401, every
/// path but /health and /metrics) and any request while the server is not serving (503).
/// </summary>
public static class OpenAiEndpoints
{
    public const string HealthPath = "/health";

    /// <summary>The engine's counts for operators and tests (behind the API key like everything but /health and /metrics).</summary>
    public const string EnginePath = "/admin/engine";

    /// <summary>Prometheus' text format (open without the key, like /health, for scrapers; on the HTTP port only).</summary>
    public const string MetricsPath = "/metrics";

    public static void Map(WebApplication app, ServerOptions options, ServedModels models, ServerState state)
    {
        ArgumentNullException.ThrowIfNull(app);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(models);
        ArgumentNullException.ThrowIfNull(state);
        var logger = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(OpenAiEndpoints).FullName!);
        var keys = new ApiKeys(options.ApiKeys);
        var created = HttpApi.Now();

        // Runs after routing chose an endpoint and before it executes (WebApplication adds both around this).
        app.Use(async (context, next) =>
        {
            var path = context.Request.Path;
            var isHealth = path.Equals(HealthPath, StringComparison.OrdinalIgnoreCase);
            var open = isHealth || path.Equals(MetricsPath, StringComparison.OrdinalIgnoreCase);
            if (!open && keys.Required && !keys.Accepts(context.Request.Headers.Authorization.ToString()))
            {
                await HttpApi.WriteErrorAsync(context, new HttpApiException(401, "authentication_error",
                    "a valid API key is required: send it as 'Authorization: Bearer <key>'", code: "invalid_api_key")).ConfigureAwait(false);
                return;
            }
            if (!isHealth && state.State != ServingState.Serving)
            {
                await HttpApi.WriteErrorAsync(context, new HttpApiException(503, "service_unavailable",
                    ServerHost.Unavailable(state.State),
                    code: "service_unavailable")).ConfigureAwait(false);
                return;
            }
            await next(context).ConfigureAwait(false);
            // Routing's own answers (no endpoint, or another method) carry no body: give them the error body.
            var status = context.Response.StatusCode;
            if (!context.Response.HasStarted && context.Response.ContentType is null
                && status is StatusCodes.Status404NotFound or StatusCodes.Status405MethodNotAllowed)
            {
                var error = status == StatusCodes.Status404NotFound
                    ? new HttpApiException(404, "invalid_request_error", $"no route for {context.Request.Method} {path}", code: "not_found")
                    : new HttpApiException(405, "invalid_request_error", $"{context.Request.Method} is not allowed on {path}", code: "method_not_allowed");
                await HttpApi.WriteErrorAsync(context, error).ConfigureAwait(false);
            }
        });

        var completions = new CompletionsEndpoint(options, models, state);
        var chat = new ChatCompletionsEndpoint(options, models, state);
        var infill = new InfillEndpoint(options, models, state);
        var nativeCompletion = new NativeCompletionEndpoint(options, models, state);
        var guard = new Guard(logger, state);
        app.MapPost("/v1/completions", guard.Wrap(completions.HandleAsync));
        app.MapPost("/v1/chat/completions", guard.Wrap(chat.HandleAsync));
        app.MapPost("/infill", guard.Wrap(infill.HandleAsync));
        app.MapPost("/completion", guard.Wrap(nativeCompletion.HandleAsync));
        app.MapGet("/v1/models", guard.Wrap(context => HttpApi.WriteJsonAsync(context, StatusCodes.Status200OK,
            new ModelList { Data = [.. models.All.Select(model => Card(model, created))] }, OpenAiJsonContext.Default.ModelList)));
        app.MapGet("/v1/models/{**id}", guard.Wrap(context =>
        {
            var id = context.GetRouteValue("id") as string;
            if (string.IsNullOrEmpty(id))
                throw HttpApiException.From(models.NotFound(""));
            return HttpApi.WriteJsonAsync(context, StatusCodes.Status200OK, Card(OpenAiGeneration.Find(models, id), created), OpenAiJsonContext.Default.ModelCard);
        }));
        var metrics = new MetricsExport(models.Bases.Select(model => (model.Engine.Meter, model.Name)), app.Services.GetRequiredService<IMeterFactory>());
        app.Lifetime.ApplicationStopped.Register(metrics.Dispose);
        app.MapGet(MetricsPath, guard.Wrap(context => context.Connection.LocalPort == options.HttpPort
            ? metrics.WriteAsync(context)
            : throw new HttpApiException(404, "invalid_request_error", $"no route for GET {MetricsPath} on this port", code: "not_found")));
        app.MapGet(EnginePath, guard.Wrap(context =>
        {
            // ?model=NAME picks a model's engine (an adapter's is its base's); the first model's by default.
            var model = OpenAiGeneration.Find(models, context.Request.Query["model"].ToString());
            var snapshot = model.Engine.Snapshot;
            return HttpApi.WriteJsonAsync(context, StatusCodes.Status200OK, new EngineStatus
            {
                Running = snapshot.Running,
                Waiting = snapshot.Waiting,
                KvBlocksUsed = snapshot.UsedBlocks,
                KvBlocksCached = snapshot.CachedBlocks,
                KvBlocksFree = snapshot.FreeBlocks,
                KvBlockTokens = model.Engine.KvBlockTokens,
                Iterations = snapshot.Iterations,
                Cancellations = snapshot.Cancellations,
                LateCancellations = snapshot.LateCancellations,
                InterruptedPrefills = snapshot.InterruptedPrefills,
            }, OpenAiJsonContext.Default.EngineStatus);
        }));
        app.MapGet(HealthPath, context =>
        {
            var current = state.State;
            // A model whose engine failed answers 503 while the others keep serving: "degraded", still 200.
            var faulted = current == ServingState.Serving ? models.Faulted.Select(m => m.Name).ToArray() : [];
            var status = current switch
            {
                ServingState.Serving when faulted.Length > 0 => "degraded",
                ServingState.Serving => "ok",
                ServingState.Loading => "loading",
                ServingState.Faulted => "faulted",
                _ => "draining",
            };
            return HttpApi.WriteJsonAsync(context, current == ServingState.Serving ? StatusCodes.Status200OK : StatusCodes.Status503ServiceUnavailable,
                new HealthResponse { Status = status, FaultedModels = faulted.Length > 0 ? faulted : null }, OpenAiJsonContext.Default.HealthResponse);
        });
    }

    // An adapter names its base as parent and root, as vLLM lists LoRA modules; a base is its own root.
    private static ModelCard Card(ServedModel model, long created) =>
        new() { Id = model.Name, Created = created, ContextLength = model.ContextLength, Root = (model.Parent ?? model).Name, Parent = model.Parent?.Name };
}

/// <summary>
/// Turns what a handler throws into the error body. A client that left gets nothing; a call the
/// shutdown cut off gets 503; an unexpected failure is logged once, with the request id and the
/// exception, and answered with a 500 that names only the request id.
/// </summary>
internal sealed class Guard(ILogger logger, ServerState state)
{
    public RequestDelegate Wrap(Func<HttpContext, Task> handler) => async context =>
    {
        try
        {
            await handler(context).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
        }
        catch (HttpApiException e)
        {
            await HttpApi.WriteErrorAsync(context, e).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // every failure must reach the client as an error body, not as a dropped connection
        catch (Exception e)
#pragma warning restore CA1031
        {
            if (context.RequestAborted.IsCancellationRequested)
                return;
            await HttpApi.WriteErrorAsync(context, HttpApiException.From(CallFailures.Classify(e, context, state, logger))).ConfigureAwait(false);
        }
    };
}
