using System.Net;
using InferenceServer.Server.Grpc;
using InferenceServer.Server.Http;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace InferenceServer.Server;

/// <summary>
/// Kestrel with two endpoints: gRPC on an HTTP/2-only port, OpenAI-style HTTP on another.
/// Each port only routes its own protocol.
/// </summary>
public static partial class ServerHost
{
    /// <param name="configuration">Extra configuration for the host, e.g. a "Kestrel" section with certificates and limits.</param>
    /// <param name="logging">Changes to the logging set up from <see cref="ServerOptions.LogLevel"/> (tests add a provider that records).</param>
    public static WebApplication Build(ServerOptions options, ServedModel model, ServerState state, IConfiguration? configuration = null,
        Action<ILoggingBuilder>? logging = null) =>
        Build(options, new ServedModels(model), state, configuration, logging);

    /// <summary>A server of several models (and adapters): a request's model name picks one.</summary>
    /// <inheritdoc cref="Build(ServerOptions, ServedModel, ServerState, IConfiguration?, Action{ILoggingBuilder}?)"/>
    public static WebApplication Build(ServerOptions options, ServedModels models, ServerState state, IConfiguration? configuration = null,
        Action<ILoggingBuilder>? logging = null)
    {
        ArgumentNullException.ThrowIfNull(models);
        ArgumentNullException.ThrowIfNull(options);
        var address = IPAddress.Parse(options.Host);
        var builder = WebApplication.CreateSlimBuilder();
        if (configuration is not null)
            builder.Configuration.AddConfiguration(configuration);
        if (options.Tls)
            builder.WebHost.UseKestrelHttpsConfiguration();
        ServerLogging.Configure(builder.Logging, options.LogLevel);
        logging?.Invoke(builder.Logging);
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.Limits.MaxRequestBodySize = Math.Max(options.MaxRequestBodyBytes, options.MaxMessageBytes + 5L);
            // Plaintext HTTP/2 cannot be negotiated, so without TLS the HTTP port speaks HTTP/1.1; with TLS, ALPN picks.
            kestrel.Listen(address, options.HttpPort, listen =>
            {
                listen.Protocols = options.Tls ? HttpProtocols.Http1AndHttp2 : HttpProtocols.Http1;
                if (options.Tls)
                    listen.UseHttps();
            });
            kestrel.Listen(address, options.GrpcPort, listen =>
            {
                listen.Protocols = HttpProtocols.Http2;
                if (options.Tls)
                    listen.UseHttps();
            });
        });
        GrpcServices.Add(builder.Services, options, models, state);
        var app = builder.Build();
        RequestTracking.Use(app, options, state);
        GrpcServices.Map(app, options);
        OpenAiEndpoints.Map(app, options, models, state);
        var engineLog = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("InferenceServer.Engine");
        foreach (var model in models.Bases)
            WatchForFault(model, models, state, engineLog);
        return app;
    }

    /// <summary>Why a server that is not serving refuses a call.</summary>
    internal static string Unavailable(ServingState state) => state switch
    {
        ServingState.Loading => "the server is loading its model; try again shortly",
        ServingState.Faulted => "the engine failed and the server cannot take requests; its log says why",
        _ => "the server is shutting down",
    };

    // An engine that stops while the server serves has failed: it is logged once, with the
    // exception. Its model's requests get UNAVAILABLE / 503 while the other models keep serving
    // (/health says "degraded"); when every model's engine has failed, health turns NOT_SERVING
    // so that an orchestrator replaces the process.
    private static void WatchForFault(ServedModel model, ServedModels models, ServerState state, ILogger logger) =>
        model.Engine.Stopped.ContinueWith(_ =>
        {
            if (model.Engine.Fault is not { } fault)
                return;
            EngineFailed(logger, model.Name, fault);
            if (state.State == ServingState.Serving && models.Bases.All(m => m.Engine.Fault is not null))
                state.State = ServingState.Faulted;
        }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);

    [LoggerMessage(EventId = 30, Level = LogLevel.Critical, Message = "the engine of {Model} stopped after an error; requests it held end with INTERNAL / 500")]
    private static partial void EngineFailed(ILogger logger, string model, Exception exception);
}
