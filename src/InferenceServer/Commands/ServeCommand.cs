using System.CommandLine;
using InferenceServer.Composition;
using InferenceServer.Engine;
using InferenceServer.Model;
using InferenceServer.Server;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Logging;

namespace InferenceServer.Commands;

/// <summary>
/// serve: loads the model, then answers gRPC and OpenAI-style HTTP on two ports (loopback by
/// default). Every setting comes from the command line, else the environment, else the
/// configuration file (appsettings.json), else its default; see <see cref="Setting{T}"/>.
/// On SIGTERM or Ctrl+C the server refuses new requests (while still listening), lets those in
/// flight finish within the grace period, ends the rest with an error and exits.
/// </summary>
internal static partial class ServeCommand
{
    // Measured drafts longer than two lose; past a handful the verification step only costs.
    private const int MaxSpeculativeDrafts = 8;

    private static readonly Setting<string[]> Model = new("model",
        "Model folder (genai_config.json, tokenizer.json, model.onnx); repeatable: each model gets its own engine and an even share of --kv-cache-bytes, and a request's model field picks one by its folder's name (none: the first).",
        [ModelOption.DefaultPath], "-m");
    private static readonly Setting<string[]> Adapter = new("adapter",
        "LoRA adapter served as NAME, from PATH (a folder build-model --lora-input wrote), on the first model or on MODEL (a served folder's name): NAME=PATH or MODEL:NAME=PATH; repeatable. A request names it as its model. Without any, a base built with --lora-targets serves every adapter in its adapters/ folder.",
        [], plural: "adapters");
    private static readonly Setting<string> Host = new("host", "Address to bind (both ports).", "127.0.0.1");
    private static readonly Setting<int> HttpPort = new("http-port", "OpenAI-style HTTP port.", ServerOptions.DefaultHttpPort);
    private static readonly Setting<int> GrpcPort = new("grpc-port", "gRPC port (HTTP/2).", ServerOptions.DefaultGrpcPort);
    private static readonly Setting<bool> Tls = new("tls", "Serve both ports over TLS with the certificate in the configuration file's Kestrel:Certificates:Default (HTTP/2 by ALPN).", false);
    private static readonly Setting<string> Device = new("device", "cpu (the dense graph on ONNX Runtime's CPU provider) or cuda (the CUDA provider, from a build with -p:OrtCuda=true: a paged folder, whose KV pool takes --kv-cache-bytes or else 90% of the GPU memory left free, or a dense float16 folder, --max-batch KV slots on the device).", "cpu");
    private static readonly Setting<int> MaxBatch = new("max-batch", "Sequences served at once (KV slots on the CPU, block table rows on CUDA).", 8);
    private static readonly Setting<int> ContextLength = new("context-length", "Tokens per sequence (0: the model's context length).", 0);
    private static readonly Setting<long> KvCacheBytes = new("kv-cache-bytes", "KV cache budget in bytes, split evenly between the models (0: all slots on the CPU, 90% of the free GPU memory on CUDA, where several models must give one).", 0L);
    private static readonly Setting<int> MaxWaiting = new("max-waiting", "Requests that may wait; more are refused (RESOURCE_EXHAUSTED / 429).", 256);
    private static readonly Setting<int> IterationBudgetMs = new("iteration-budget-ms",
        "Time one engine iteration should take at most, in ms: long prompts are computed in chunks sized from the measured cost of recent steps, so running sequences' next tokens and cancellations wait at most about this long (0: chunks by tokens alone).",
        (int)EngineOptions.InteractiveIterationBudget.TotalMilliseconds);
    private static readonly Setting<int> SpeculativeDrafts = new("speculative-drafts",
        "Prompt-lookup speculative decoding: up to this many tokens copied from where the sequence's last tokens appeared before are checked in one step while at most two sequences decode (0: off). Dense models with the logits_to_keep input only; the paged path ignores it. Off by default: on 2 CPU cores with the int4 default model it gave about 1.07x output tokens/s on the IDE workload (see the README), and int4 text may differ from plain greedy text at near-ties.",
        0);
    private static readonly Setting<int> Threads = new("threads", "ONNX Runtime intra-op threads (0: one per core).", 0);
    private static readonly Setting<string[]> ApiKeys = new("api-key", "Accept only requests with one of these keys (repeatable; HTTP Bearer, gRPC authorization metadata; comma-separated in the environment, a list in the file).", [], plural: "api-keys");
    private static readonly Setting<int> MaxMessageBytes = new("max-message-bytes", "Largest gRPC message and HTTP body.", 4 << 20);
    private static readonly Setting<int> GraceSeconds = new("shutdown-grace-seconds", "Time in-flight requests get to finish on shutdown.", 10);
    private static readonly Setting<int> MaxStopStrings = new("max-stop-strings", "Most stop strings one request may give (gRPC, /v1/completions and /infill alike).", new RequestLimits().MaxStopStrings);
    private static readonly Setting<int> MaxStopBytes = new("max-stop-bytes", "Longest stop string, in UTF-8 bytes.", new RequestLimits().MaxStopStringBytes);
    private static readonly Setting<int> MaxPriority = new("max-priority",
        $"Highest priority a request may ask for, 0..{RequestLimits.PriorityCeiling} (higher runs first; requests may ask for {RequestLimits.MinPriority} up to this; 0: clients can only lower theirs).", 0);
    private static readonly Setting<string> LogLevelSetting = new("log-level",
        $"Least severe log entries written ({string.Join(", ", ServerLogging.LevelNames)}); information logs one line per request.", "information");

    public static IEnumerable<Option> Options =>
    [
        ConfigurationFile.Option, Model.Option, Adapter.Option, Device.Option, Host.Option, HttpPort.Option, GrpcPort.Option, Tls.Option, MaxBatch.Option,
        ContextLength.Option, KvCacheBytes.Option, MaxWaiting.Option, IterationBudgetMs.Option, SpeculativeDrafts.Option, Threads.Option, ApiKeys.Option, MaxMessageBytes.Option, GraceSeconds.Option,
        MaxStopStrings.Option, MaxStopBytes.Option, MaxPriority.Option,
        LogLevelSetting.Option,
    ];

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
        IConfiguration file;
        ServerOptions options;
        string[] modelPaths;
        AdapterOption[] adapters;
        int maxBatch, contextLength, threads;
        bool cuda;
        EngineOptions engine;
        LogLevel logLevel;
        try
        {
            file = ConfigurationFile.Load(parseResult);
            var levelName = LogLevelSetting.Resolve(parseResult, file);
            logLevel = ServerLogging.Parse(levelName)
                ?? throw new SettingException($"log level '{levelName}' is not one of {string.Join(", ", ServerLogging.LevelNames)}");
            var host = Host.Resolve(parseResult, file);
            if (!System.Net.IPAddress.TryParse(host, out _))
                throw new SettingException($"host '{host}' is not an IP address");
            var maxMessageBytes = MaxMessageBytes.Resolve(parseResult, file);
            var graceSeconds = GraceSeconds.Resolve(parseResult, file);
            if (graceSeconds < 0)
                throw new SettingException($"shutdown-grace-seconds is {graceSeconds}; it cannot be negative");
            options = new ServerOptions
            {
                Host = host,
                HttpPort = HttpPort.Resolve(parseResult, file),
                GrpcPort = GrpcPort.Resolve(parseResult, file),
                Tls = Tls.Resolve(parseResult, file),
                ApiKeys = ApiKeys.Resolve(parseResult, file),
                MaxMessageBytes = maxMessageBytes,
                MaxRequestBodyBytes = maxMessageBytes,
                ShutdownGracePeriod = TimeSpan.FromSeconds(graceSeconds),
                LogLevel = logLevel,
                Limits = ResolveLimits(parseResult, file),
            };
            if (options.HttpPort == options.GrpcPort)
                throw new SettingException($"the HTTP and gRPC ports are both {options.HttpPort}; they must differ");
            modelPaths = Model.Resolve(parseResult, file);
            if (modelPaths.Length == 0)
                throw new SettingException("no model: pass --model DIR");
            try
            {
                adapters = [.. Adapter.Resolve(parseResult, file).Select(AdapterOption.Parse)];
            }
            catch (ArgumentException e)
            {
                throw new SettingException(e.Message);
            }
            cuda = Device.Resolve(parseResult, file) switch
            {
                "cpu" => false,
                "cuda" => true,
                var other => throw new SettingException($"device '{other}' is not cpu or cuda"),
            };
            maxBatch = MaxBatch.Resolve(parseResult, file);
            contextLength = ContextLength.Resolve(parseResult, file);
            threads = Threads.Resolve(parseResult, file);
            var iterationBudget = IterationBudgetMs.Resolve(parseResult, file);
            if (iterationBudget < 0)
                throw new SettingException($"iteration-budget-ms is {iterationBudget}; it cannot be negative");
            var drafts = SpeculativeDrafts.Resolve(parseResult, file);
            if (drafts is < 0 or > MaxSpeculativeDrafts)
                throw new SettingException($"speculative-drafts is {drafts}; it must be between 0 (off) and {MaxSpeculativeDrafts}");
            engine = new EngineOptions
            {
                KvCacheBytes = KvCacheBytes.Resolve(parseResult, file),
                MaxWaitingRequests = MaxWaiting.Resolve(parseResult, file),
                IterationTimeBudget = TimeSpan.FromMilliseconds(iterationBudget),
                SpeculativeDraftTokens = drafts,
            };
        }
        catch (SettingException e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 1;
        }
        using var loggers = LoggerFactory.Create(logging => ServerLogging.Configure(logging, logLevel));
        var log = loggers.CreateLogger("InferenceServer.Serve");
        ServedModels models;
        var loading = System.Diagnostics.Stopwatch.StartNew();
        LoadingModel(log, string.Join(", ", modelPaths), cuda ? "cuda" : "cpu");
        try
        {
            models = CompositionRoot.LoadModels(modelPaths, adapters.Length > 0 ? adapters : null, maxBatch, contextLength, threads, engine, cuda);
        }
        catch (Exception e) when (e is ModelLoadException or Tokenizer.TokenizerLoadException or ArgumentException)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            Console.Error.WriteLine("Pass --model DIR, or build a model folder with 'build-model'.");
            return 1;
        }
        foreach (var model in models.All)
        {
            if (model.Parent is { } parent)
                AdapterLoaded(log, model.Name, parent.Name);
            else
                ModelLoaded(log, model.Name, loading.Elapsed.TotalSeconds, model.MaxBatch, model.ContextLength);
        }
        if (engine.SpeculativeDraftTokens > 0)
        {
            foreach (var model in models.Bases)
                Speculation(log, model.Name, model.Engine is InferenceEngine { SpeculativeDraftTokens: > 0 } ? $"on, up to {engine.SpeculativeDraftTokens} drafted tokens a step" : "off: the paged path checks no drafts");
        }
        await using (models)
        {
            var state = new ServerState();
            var app = ServerHost.Build(options, models, state, file);
            await using (app)
            {
                try
                {
                    await app.StartAsync(cancellationToken);
                }
                catch (IOException e)
                {
                    Console.Error.WriteLine($"error: {ListenFailure(options, e)}");
                    return 1;
                }
                // /health says "loading" until the first steps have run.
                var warming = System.Diagnostics.Stopwatch.StartNew();
                WarmingUp(log);
                foreach (var model in models.Bases)
                    await model.WarmUpAsync(cancellationToken);
                WarmedUp(log, warming.Elapsed.TotalMilliseconds);
                state.State = ServingState.Serving;
                var scheme = options.Tls ? "https" : "http";
                Listening(log, string.Join(", ", models.All.Select(m => m.Name)), $"{scheme}://{options.Host}:{options.GrpcPort}", $"{scheme}://{options.Host}:{options.HttpPort}");
                // SIGTERM and Ctrl+C reach us through the host's lifetime (Program turns off the command line's own handling).
                using var stopping = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, app.Lifetime.ApplicationStopping);
                try
                {
                    await Task.Delay(Timeout.Infinite, stopping.Token);
                }
                catch (OperationCanceledException)
                {
                }
                await ServerShutdown.DrainAsync(app, state, options.ShutdownGracePeriod);
                Stopped(log);
            }
        }
        return 0;
    }

    private static RequestLimits ResolveLimits(ParseResult parseResult, IConfiguration file)
    {
        var stopStrings = MaxStopStrings.Resolve(parseResult, file);
        var stopBytes = MaxStopBytes.Resolve(parseResult, file);
        var priority = MaxPriority.Resolve(parseResult, file);
        if (stopStrings < 0)
            throw new SettingException($"max-stop-strings is {stopStrings}; it cannot be negative");
        if (stopBytes < 1)
            throw new SettingException($"max-stop-bytes is {stopBytes}; it must be at least 1");
        if (priority is < 0 or > RequestLimits.PriorityCeiling)
            throw new SettingException($"max-priority is {priority}; it must be between 0 and {RequestLimits.PriorityCeiling}");
        return new RequestLimits { MaxStopStrings = stopStrings, MaxStopStringBytes = stopBytes, MaxPriority = priority };
    }

    /// <summary>One line for a port that cannot be listened on (the usual cause: another program has it).</summary>
    private static string ListenFailure(ServerOptions options, IOException e)
    {
        var port = e.Message.Contains($":{options.GrpcPort}", StringComparison.Ordinal) ? options.GrpcPort : options.HttpPort;
        var (protocol, option) = port == options.GrpcPort ? ("gRPC", "--grpc-port") : ("HTTP", "--http-port");
        if (e.InnerException is Microsoft.AspNetCore.Connections.AddressInUseException)
            return $"port {port} is already in use ({protocol}); choose another with {option}";
        return $"cannot listen on {options.Host}:{port} ({protocol}): {e.InnerException?.Message ?? e.Message}";
    }

    [LoggerMessage(EventId = 20, Level = LogLevel.Information, Message = "loading the model in {Path} on the {Device}")]
    private static partial void LoadingModel(ILogger logger, string path, string device);

    [LoggerMessage(EventId = 21, Level = LogLevel.Information, Message = "loaded {Model} in {Seconds:F1} s: {Slots} slots x {Context} tokens")]
    private static partial void ModelLoaded(ILogger logger, string model, double seconds, int slots, int context);

    [LoggerMessage(EventId = 26, Level = LogLevel.Information, Message = "serving adapter {Adapter} on {Model}")]
    private static partial void AdapterLoaded(ILogger logger, string adapter, string model);

    [LoggerMessage(EventId = 27, Level = LogLevel.Information, Message = "prompt-lookup speculation on {Model}: {State}")]
    private static partial void Speculation(ILogger logger, string model, string state);

    [LoggerMessage(EventId = 24, Level = LogLevel.Information, Message = "warming up: a first generation through the engine")]
    private static partial void WarmingUp(ILogger logger);

    [LoggerMessage(EventId = 25, Level = LogLevel.Information, Message = "warmed up in {Milliseconds:F0} ms")]
    private static partial void WarmedUp(ILogger logger, double milliseconds);

    [LoggerMessage(EventId = 22, Level = LogLevel.Information, Message = "serving {Model}: gRPC on {Grpc}, HTTP on {Http}")]
    private static partial void Listening(ILogger logger, string model, string grpc, string http);

    [LoggerMessage(EventId = 23, Level = LogLevel.Information, Message = "stopped")]
    private static partial void Stopped(ILogger logger);
}
