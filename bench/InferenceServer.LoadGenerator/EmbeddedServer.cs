using System.Net;
using System.Net.Sockets;
using InferenceServer.Composition;
using InferenceServer.Engine;
using InferenceServer.Server;
using Microsoft.AspNetCore.Builder;

namespace InferenceServer.LoadGenerator;

/// <summary>Our real server (both ports, Kestrel) in this process on free loopback ports, for the suite and tests.</summary>
public sealed class EmbeddedServer : IAsyncDisposable
{
    private readonly WebApplication _app;

    private EmbeddedServer(WebApplication app, ServedModel model, ServerOptions options)
    {
        _app = app;
        Model = model;
        Options = options;
    }

    public ServedModel Model { get; }
    public ServerOptions Options { get; }
    public Uri GrpcAddress => new($"http://127.0.0.1:{Options.GrpcPort}");
    public Uri HttpAddress => new($"http://127.0.0.1:{Options.HttpPort}");

    /// <param name="speculativeDrafts">Prompt-lookup drafts per step (0: off).</param>
    public static async Task<EmbeddedServer> StartAsync(string modelPath, int maxBatch, int contextLength, int threads, bool cuda, TimeSpan iterationBudget,
        CancellationToken cancellationToken, int speculativeDrafts = 0)
    {
        var model = CompositionRoot.LoadModel(modelPath, maxBatch, contextLength, threads,
            new EngineOptions { IterationTimeBudget = iterationBudget, SpeculativeDraftTokens = speculativeDrafts }, cuda);
        try
        {
            // Warnings only: a log line per request would be measured with the requests and bury the report's output.
            var options = new ServerOptions
            {
                Host = "127.0.0.1", HttpPort = FreePort(), GrpcPort = FreePort(), LogLevel = Microsoft.Extensions.Logging.LogLevel.Warning,
            };
            var state = new ServerState { State = ServingState.Serving };
            var app = ServerHost.Build(options, model, state);
            try
            {
                await app.StartAsync(cancellationToken).ConfigureAwait(false);
            }
            catch
            {
                await app.DisposeAsync().ConfigureAwait(false);
                throw;
            }
            return new EmbeddedServer(app, model, options);
        }
        catch
        {
            await model.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>A port nobody listens on now (the OS's pick for port 0).</summary>
    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync().ConfigureAwait(false);
        await _app.DisposeAsync().ConfigureAwait(false);
        await Model.DisposeAsync().ConfigureAwait(false);
    }
}
