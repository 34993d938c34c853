using System.CommandLine;
using InferenceServer.Engine;
using InferenceServer.Model;
using InferenceServer.Server;

namespace InferenceServer.Commands;

/// <summary>
/// serve: loads the model, then answers gRPC and OpenAI-style HTTP on two ports (loopback by
/// default). Every option can also come from the environment (INFERENCESERVER_ + the option name
/// in capitals, dashes as underscores, e.g. INFERENCESERVER_GRPC_PORT); the command line wins.
/// On SIGTERM or Ctrl+C the server stops taking requests, lets those in flight finish within the
/// grace period, cancels the rest and exits.
/// </summary>
internal static class ServeCommand
{
    private static readonly Option<string> Model = ModelOption.Create();
    private static readonly Option<string> Host = EnvOption("--host", "Address to bind (both ports).", "127.0.0.1");
    private static readonly Option<int> HttpPort = EnvOption("--http-port", "OpenAI-style HTTP port.", ServerOptions.DefaultHttpPort);
    private static readonly Option<int> GrpcPort = EnvOption("--grpc-port", "gRPC port (HTTP/2, plaintext).", ServerOptions.DefaultGrpcPort);
    private static readonly Option<int> MaxBatch = EnvOption("--max-batch", "Sequences served at once (KV slots).", 8);
    private static readonly Option<int> ContextLength = EnvOption("--context-length", "Tokens per sequence (0: the model's context length).", 0);
    private static readonly Option<long> KvCacheBytes = EnvOption("--kv-cache-bytes", "KV cache budget in bytes (0: all slots).", 0L);
    private static readonly Option<int> MaxWaiting = EnvOption("--max-waiting", "Requests that may wait; more are refused (RESOURCE_EXHAUSTED / 429).", 256);
    private static readonly Option<int> Threads = EnvOption("--threads", "ONNX Runtime intra-op threads (0: one per core).", 0);
    private static readonly Option<string[]> ApiKeys = new("--api-key")
    {
        Description = "Accept only requests with this key (repeatable; HTTP Bearer, gRPC authorization metadata). Env: INFERENCESERVER_API_KEYS, comma-separated.",
        DefaultValueFactory = _ => Environment.GetEnvironmentVariable("INFERENCESERVER_API_KEYS")?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries) ?? [],
    };
    private static readonly Option<int> MaxMessageBytes = EnvOption("--max-message-bytes", "Largest gRPC message and HTTP body.", 4 << 20);
    private static readonly Option<int> GraceSeconds = EnvOption("--shutdown-grace-seconds", "Time in-flight requests get to finish on shutdown.", 10);

    private static Option<T> EnvOption<T>(string name, string description, T fallback)
    {
        var variable = "INFERENCESERVER_" + name.TrimStart('-').Replace('-', '_').ToUpperInvariant();
        return new Option<T>(name)
        {
            Description = $"{description} Env: {variable}.",
            DefaultValueFactory = _ => Environment.GetEnvironmentVariable(variable) is { } value
                ? (T)Convert.ChangeType(value, typeof(T), System.Globalization.CultureInfo.InvariantCulture)
                : fallback,
        };
    }

    public static IEnumerable<Option> Options => [Model, Host, HttpPort, GrpcPort, MaxBatch, ContextLength, KvCacheBytes, MaxWaiting, Threads, ApiKeys, MaxMessageBytes, GraceSeconds];

    public static Command Create()
    {
        var command = new Command("serve", "Serve a model over gRPC and OpenAI-style HTTP (the default command).");
        foreach (var option in Options)
            command.Options.Add(option);
        command.SetAction(RunAsync);
        return command;
    }

    public static async Task<int> RunAsync(ParseResult parseResult, CancellationToken cancellationToken)
    {
        if (!System.Net.IPAddress.TryParse(parseResult.GetValue(Host), out _))
        {
            Console.Error.WriteLine($"error: --host '{parseResult.GetValue(Host)}' is not an IP address");
            return 1;
        }
        var options = new ServerOptions
        {
            Host = parseResult.GetValue(Host)!,
            HttpPort = parseResult.GetValue(HttpPort),
            GrpcPort = parseResult.GetValue(GrpcPort),
            ApiKeys = parseResult.GetValue(ApiKeys) ?? [],
            MaxMessageBytes = parseResult.GetValue(MaxMessageBytes),
            MaxRequestBodyBytes = parseResult.GetValue(MaxMessageBytes),
            ShutdownGracePeriod = TimeSpan.FromSeconds(parseResult.GetValue(GraceSeconds)),
        };
        ServedModel model;
        try
        {
            model = ServedModel.Load(parseResult.GetValue(Model)!, parseResult.GetValue(MaxBatch), parseResult.GetValue(ContextLength),
                parseResult.GetValue(Threads), new EngineOptions { KvCacheBytes = parseResult.GetValue(KvCacheBytes), MaxWaitingRequests = parseResult.GetValue(MaxWaiting) });
        }
        catch (Exception e) when (e is ModelLoadException or Tokenizer.TokenizerLoadException or ArgumentException)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            Console.Error.WriteLine("Pass --model DIR, or build a model folder with 'build-model'.");
            return 1;
        }
        await using (model)
        {
            var state = new ServerState();
            var app = ServerHost.Build(options, model, state);
            await using (app)
            {
                await app.StartAsync(cancellationToken);
                state.State = ServingState.Serving;
                Console.WriteLine($"serving {model.Name}: gRPC on {options.Host}:{options.GrpcPort}, HTTP on http://{options.Host}:{options.HttpPort} ({model.MaxBatch} slots x {model.ContextLength} tokens)");
                // SIGTERM and Ctrl+C reach us through the command line's token or the host's own lifetime, whichever sees them.
                using var stopping = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, app.Lifetime.ApplicationStopping);
                try
                {
                    await Task.Delay(Timeout.Infinite, stopping.Token);
                }
                catch (OperationCanceledException)
                {
                }
                // Draining: health says NOT_SERVING, new calls get UNAVAILABLE, calls in flight get the grace period.
                state.State = ServingState.Draining;
                using var grace = new CancellationTokenSource(options.ShutdownGracePeriod);
                await app.StopAsync(grace.Token);
            }
        }
        return 0;
    }
}
