using System.Net;
using InferenceServer.Server.Grpc;
using InferenceServer.Server.Http;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
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
    public static WebApplication Build(ServerOptions options, ServedModel model, ServerState state)
    {
        ArgumentNullException.ThrowIfNull(options);
        var address = IPAddress.Parse(options.Host);
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = options.ShutdownGracePeriod);
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.Limits.MaxRequestBodySize = Math.Max(options.MaxRequestBodyBytes, options.MaxMessageBytes + 5L);
            // Plaintext HTTP/2 cannot be negotiated, so the HTTP port speaks HTTP/1.1 (TLS setups may add h2).
            kestrel.Listen(address, options.HttpPort, listen => listen.Protocols = HttpProtocols.Http1);
            kestrel.Listen(address, options.GrpcPort, listen => listen.Protocols = HttpProtocols.Http2);
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
