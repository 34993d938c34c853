using System.Diagnostics;
using InferenceServer.Engine;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace InferenceServer.Server;

/// <summary>What the request log says about one call; the endpoints fill in what they learn.</summary>
internal sealed class RequestRecord(string id)
{
    public string Id { get; } = id;
    public int? PromptTokens { get; private set; }
    public int? CompletionTokens { get; private set; }

    public static RequestRecord? Of(HttpContext context) => context.Features.Get<RequestRecord>();

    /// <summary>The request id to name in logs and error messages.</summary>
    public static string IdOf(HttpContext context) => Of(context)?.Id ?? context.TraceIdentifier;

    public static void SetUsage(HttpContext context, Usage usage)
    {
        if (Of(context) is { } record)
        {
            record.PromptTokens = usage.PromptTokens;
            record.CompletionTokens = usage.CompletionTokens;
        }
    }
}

/// <summary>
/// The first middleware on both ports: gives every call a request id (the client's x-request-id
/// when it is sane, else a new one) and sends it back in the x-request-id header, counts the call
/// as in flight for the shutdown, and logs one line when it ends.
/// </summary>
internal static partial class RequestTracking
{
    public const string HeaderName = "x-request-id";
    public const string LogCategory = "InferenceServer.Requests";
    private const int MaxIdLength = 128;

    public static void Use(WebApplication app, ServerOptions options, ServerState state)
    {
        var logger = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger(LogCategory);
        app.Use(async (context, next) =>
        {
            var started = Stopwatch.GetTimestamp();
            var record = new RequestRecord(IdFrom(context.Request.Headers[HeaderName]));
            context.Features.Set(record);
            context.TraceIdentifier = record.Id;
            context.Response.OnStarting(static s =>
            {
                var (response, id) = ((HttpResponse, string))s;
                response.Headers[HeaderName] = id;
                return Task.CompletedTask;
            }, (context.Response, record.Id));
            var grpc = context.Connection.LocalPort == options.GrpcPort;
            // Streams that last as long as the client wants (health watches, reflection) do not hold up a shutdown.
            var lasting = grpc && IsOpenEnded(context.Request.Path);
            state.CallStarted(lasting);
            try
            {
                await next(context).ConfigureAwait(false);
            }
            finally
            {
                state.CallEnded(lasting);
                if (logger.IsEnabled(LogLevel.Information))
                {
                    // A client that left gets no status; 499 is what proxies log for it.
                    var left = context.RequestAborted.IsCancellationRequested;
                    var status = grpc ? GrpcStatusSent(context)
                        : left ? "499" : context.Response.StatusCode.ToString(System.Globalization.CultureInfo.InvariantCulture);
                    if (left)
                        status += " (client left)";
                    Completed(logger, grpc ? "gRPC" : "HTTP", context.Request.Method, context.Request.Path, status,
                        Stopwatch.GetElapsedTime(started).TotalMilliseconds, Count(record.PromptTokens), Count(record.CompletionTokens), record.Id);
                }
            }
        });
    }

    private static bool IsOpenEnded(PathString path) =>
        path.StartsWithSegments("/grpc.health.v1.Health/Watch", StringComparison.Ordinal)
        || path.StartsWithSegments("/grpc.reflection.v1.ServerReflection", StringComparison.Ordinal)
        || path.StartsWithSegments("/grpc.reflection.v1alpha.ServerReflection", StringComparison.Ordinal);

    // grpc-status as sent: in the trailers, or in the headers of a call that failed before any message.
    private static string GrpcStatusSent(HttpContext context)
    {
        var sent = context.Response.Headers["grpc-status"].ToString();
        if (sent.Length == 0)
            sent = context.Features.Get<IHttpResponseTrailersFeature>()?.Trailers["grpc-status"].ToString() ?? "";
        return int.TryParse(sent, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var code)
            ? ((GrpcStatus)code).ToString() : "no status";
    }

    /// <summary>The client's id when it is short and plain (it goes into logs and headers as is), else a new one.</summary>
    internal static string IdFrom(string? given)
    {
        if (!string.IsNullOrEmpty(given) && given.Length <= MaxIdLength && given.All(IsIdChar))
            return given;
        return "req-" + Guid.NewGuid().ToString("N");
    }

    private static bool IsIdChar(char c) => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' or ':';

    private static string Count(int? tokens) => tokens?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "-";

    [LoggerMessage(EventId = 1, Level = LogLevel.Information,
        Message = "{Protocol} {Method} {Path} {Status} {DurationMs:F1} ms prompt_tokens={PromptTokens} completion_tokens={CompletionTokens} request_id={RequestId}")]
    private static partial void Completed(ILogger logger, string protocol, string method, string path, string status, double durationMs,
        string promptTokens, string completionTokens, string requestId);
}
