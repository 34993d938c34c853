using System.Net;
using InferenceServer.Server.Grpc;
using InferenceServer.Server.Http;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace InferenceServer.Server;

/// <summary>
/// Kestrel with two endpoints: gRPC on an HTTP/2-only port, OpenAI-style HTTP on another.
/// Each port only routes its own protocol.
/// </summary>
public static class ServerHost
{
    /// <param name="configuration">Extra configuration for the host, e.g. a "Kestrel" section with certificates and limits.</param>
    public static WebApplication Build(ServerOptions options, ServedModel model, ServerState state, IConfiguration? configuration = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        var address = IPAddress.Parse(options.Host);
        var builder = WebApplication.CreateSlimBuilder();
        if (configuration is not null)
            builder.Configuration.AddConfiguration(configuration);
        if (options.Tls)
            builder.WebHost.UseKestrelHttpsConfiguration();
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = options.ShutdownGracePeriod);
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
        var app = builder.Build();
        var grpc = new GrpcEndpoint(options, model, state);
        // Route by the port a request came in on: the gRPC port answers only gRPC.
        app.Use(async (context, next) =>
        {
            if (context.Connection.LocalPort == options.GrpcPort)
                await grpc.HandleAsync(context).ConfigureAwait(false);
            else
                await next(context).ConfigureAwait(false);
        });
        OpenAiEndpoints.Map(app, options, model, state);
        return app;
    }
}

/// <summary>How a server stops.</summary>
public static class ServerShutdown
{
    /// <summary>
    /// Draining: health turns NOT_SERVING and new calls get UNAVAILABLE / 503 at once, calls in
    /// flight get <paramref name="grace"/> to finish; then Kestrel closes the connections, which
    /// cancels whatever still runs (its engine sequences are freed).
    /// </summary>
    public static async Task DrainAsync(WebApplication app, ServerState state, TimeSpan grace)
    {
        ArgumentNullException.ThrowIfNull(app);
        ArgumentNullException.ThrowIfNull(state);
        state.State = ServingState.Draining;
        using var deadline = new CancellationTokenSource(grace);
        await app.StopAsync(deadline.Token).ConfigureAwait(false);
    }
}

/// <summary>The serving state shared by health checks and both front ends.</summary>
public sealed class ServerState
{
    private volatile ServingState _state = ServingState.Loading;

    public ServingState State
    {
        get => _state;
        set
        {
            _state = value;
            Changed?.Invoke(value);
        }
    }

    public event Action<ServingState>? Changed;
}
