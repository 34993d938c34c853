using System.CommandLine;
using System.Globalization;

namespace InferenceServer.LoadGenerator.Soak;

/// <summary>The "soak" subcommand: options, and the exit code that says whether the server held up.</summary>
internal static class SoakCommand
{
    /// <summary>Exit code of a soak that ran and found a problem (1 is an error before or while running).</summary>
    public const int FailedExitCode = 2;

    private static readonly Option<string?> Server = new("--server") { Description = "The server program to start (bin/Release/net10.0/inference-server, or its .dll); bench/soak/run.sh builds and passes it." };
    private static readonly Option<string?> Target = new("--target") { Description = "An already running server's HTTP root (http://HOST:PORT) instead of starting one." };
    private static readonly Option<string?> Grpc = new("--grpc") { Description = "With --target: its gRPC address (http://HOST:PORT; default the target's host, port 50051)." };
    private static readonly Option<int> Pid = new("--pid") { Description = "With --target: the server's process id, to sample its VmRSS (without it RSS is not checked)." };
    private static readonly Option<string> Model = new("--model", "-m") { Description = "Model folder to serve and to cut prompts with.", DefaultValueFactory = _ => Path.Combine("models", "minicoder") };
    private static readonly Option<string?> ApiKey = new("--api-key") { Description = "Sent as Authorization: Bearer KEY (gRPC: authorization metadata)." };
    private static readonly Option<string?> Manifest = new("--manifest") { Description = "JSON list of source files to cut prompts from (default: workloads/python-stdlib.json)." };
    private static readonly Option<string?> Out = new("--out", "-o") { Description = "Output folder (default bench/results/<yyyyMMdd-HHmmss>-soak)." };
    private static readonly Option<string> Duration = new("--duration", "-d") { Description = "How long the load runs: seconds, or with a unit (90s, 10m, 1h).", DefaultValueFactory = _ => "60s" };
    private static readonly Option<int> Concurrency = new("--concurrency", "-c") { Description = "Requests in flight (0: --saturation x the server's max batch)." };
    private static readonly Option<int> Saturation = new("--saturation") { Description = "Requests in flight per KV slot of the server when --concurrency is 0.", DefaultValueFactory = _ => 2 };
    private static readonly Option<double> CancelFraction = new("--cancel-fraction") { Description = "Share of requests the client cancels at a random point (0..1).", DefaultValueFactory = _ => 0.3 };
    private static readonly Option<string> Mix = new("--mix") { Description = "Request kinds, drawn with equal odds: http-stream, http, grpc-stream, grpc (comma-separated).", DefaultValueFactory = _ => string.Join(',', SoakRequestKinds.All) };
    private static readonly Option<int> PromptTokens = new("--prompt-tokens") { Description = "Prompt length in tokens.", DefaultValueFactory = _ => 128 };
    private static readonly Option<int> OutputTokens = new("--output-tokens") { Description = "Largest max_tokens (each request draws from a quarter of it to all of it).", DefaultValueFactory = _ => 64 };
    private static readonly Option<int> Seed = new("--seed") { Description = "Seed of every random choice.", DefaultValueFactory = _ => 1 };
    private static readonly Option<double> SampleSeconds = new("--sample-interval") { Description = "Seconds between samples of RSS and GET /admin/engine.", DefaultValueFactory = _ => 5 };
    private static readonly Option<double> Warmup = new("--warmup-fraction") { Description = "The RSS baseline is the first sample at or after this share of the run.", DefaultValueFactory = _ => 0.2 };
    private static readonly Option<double> MaxRssGrowth = new("--max-rss-growth") { Description = "Most RSS growth (percent) from the baseline to the end that passes.", DefaultValueFactory = _ => 10 };
    private static readonly Option<double> DrainSeconds = new("--drain-timeout") { Description = "Seconds requests in flight at the end may take before they count as lost.", DefaultValueFactory = _ => 60 };
    private static readonly Option<double> IdleSeconds = new("--idle-timeout") { Description = "Seconds the engine may take to go idle after the last request.", DefaultValueFactory = _ => 30 };
    private static readonly Option<int> MaxBatch = new("--max-batch") { Description = "A server started here: its --max-batch (0: its default)." };
    private static readonly Option<int> Threads = new("--threads") { Description = "A server started here: its --threads (0: its default)." };
    private static readonly Option<string?> ServerArgs = new("--server-args") { Description = "A server started here: more serve options, space-separated (e.g. \"--max-waiting 8\")." };

    public static Command Create()
    {
        var command = new Command("soak",
            "Soak our server: a closed loop at twice saturation over HTTP (streamed and not) and gRPC, with a share of requests cancelled at random points, "
            + "for a bounded time. Samples the server's RSS and GET /admin/engine; at the end every request must have had an answer, the engine must be idle "
            + "with no KV block in use, and RSS must not have grown past the limit after warm-up. Writes soak.json and soak.md; exit code 2 when a check fails.");
        Option[] options =
        [
            Server, Target, Grpc, Pid, Model, ApiKey, Manifest, Out, Duration, Concurrency, Saturation, CancelFraction, Mix, PromptTokens, OutputTokens,
            Seed, SampleSeconds, Warmup, MaxRssGrowth, DrainSeconds, IdleSeconds, MaxBatch, Threads, ServerArgs,
        ];
        foreach (var option in options)
            command.Options.Add(option);
        command.SetAction(RunAsync);
        return command;
    }

    private static async Task<int> RunAsync(ParseResult parseResult, CancellationToken cancellationToken)
    {
        SoakSettings settings;
        try
        {
            settings = Settings(parseResult);
        }
        catch (ArgumentException e)
        {
            await Console.Error.WriteLineAsync($"error: {e.Message}").ConfigureAwait(false);
            return 1;
        }
        try
        {
            var (report, folder) = await SoakRun.RunAsync(settings, Environment.GetCommandLineArgs().Skip(1).ToArray(), Console.Error, cancellationToken).ConfigureAwait(false);
            Console.WriteLine();
            Console.WriteLine(report.ToMarkdown());
            Console.WriteLine($"wrote {Path.GetFullPath(Path.Combine(folder, "soak.json"))} and soak.md");
            return report.Passed ? 0 : FailedExitCode;
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            await Console.Error.WriteLineAsync("interrupted").ConfigureAwait(false);
            return 130;
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or IOException or InvalidDataException or HttpRequestException
            or InferenceServer.Client.GrpcCallException or InferenceServer.Tokenizer.TokenizerLoadException or UnauthorizedAccessException)
        {
            await Console.Error.WriteLineAsync($"error: {e.Message}").ConfigureAwait(false);
            return 1;
        }
    }

    private static SoakSettings Settings(ParseResult p)
    {
        var serverArguments = new List<string>();
        if (p.GetValue(MaxBatch) is > 0 and var batch)
            serverArguments.AddRange(["--max-batch", batch.ToString(CultureInfo.InvariantCulture)]);
        if (p.GetValue(Threads) is > 0 and var threads)
            serverArguments.AddRange(["--threads", threads.ToString(CultureInfo.InvariantCulture)]);
        if (p.GetValue(ServerArgs) is { } extra)
            serverArguments.AddRange(extra.Split(' ', StringSplitOptions.RemoveEmptyEntries));
        var mix = p.GetValue(Mix)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (mix.Length == 0 || mix.Any(k => !SoakRequestKinds.All.Contains(k)))
            throw new ArgumentException($"--mix '{p.GetValue(Mix)}': expected some of {string.Join(", ", SoakRequestKinds.All)}");
        var settings = new SoakSettings
        {
            Server = p.GetValue(Server),
            ServerArguments = serverArguments,
            Target = p.GetValue(Target) is { } target ? AbsoluteUri(target, "--target") : null,
            Grpc = p.GetValue(Grpc) is { } grpc ? AbsoluteUri(grpc, "--grpc") : null,
            Pid = p.GetValue(Pid),
            Model = p.GetValue(Model)!,
            ApiKey = p.GetValue(ApiKey),
            Manifest = p.GetValue(Manifest),
            Out = p.GetValue(Out),
            Duration = SoakSettings.ParseDuration(p.GetValue(Duration)!),
            Concurrency = p.GetValue(Concurrency),
            SaturationFactor = p.GetValue(Saturation),
            CancelFraction = p.GetValue(CancelFraction),
            Mix = mix,
            PromptTokens = p.GetValue(PromptTokens),
            OutputTokens = p.GetValue(OutputTokens),
            Seed = p.GetValue(Seed),
            SampleInterval = TimeSpan.FromSeconds(p.GetValue(SampleSeconds)),
            WarmupFraction = p.GetValue(Warmup),
            MaxRssGrowthPercent = p.GetValue(MaxRssGrowth),
            DrainTimeout = TimeSpan.FromSeconds(p.GetValue(DrainSeconds)),
            IdleTimeout = TimeSpan.FromSeconds(p.GetValue(IdleSeconds)),
        };
        if (settings.Concurrency < 0 || settings.SaturationFactor < 1)
            throw new ArgumentException("--concurrency must not be negative and --saturation must be positive");
        if (settings.CancelFraction is < 0 or > 1 || settings.WarmupFraction is < 0 or >= 1)
            throw new ArgumentException("--cancel-fraction must be within 0..1 and --warmup-fraction within 0..1 (less than 1)");
        if (settings.PromptTokens < 1 || settings.OutputTokens < 1)
            throw new ArgumentException("--prompt-tokens and --output-tokens must be positive");
        if (!(settings.SampleInterval > TimeSpan.Zero) || !(settings.DrainTimeout > TimeSpan.Zero) || !(settings.IdleTimeout > TimeSpan.Zero))
            throw new ArgumentException("--sample-interval, --drain-timeout and --idle-timeout must be positive");
        return settings;
    }

    private static Uri AbsoluteUri(string text, string option) =>
        Uri.TryCreate(text, UriKind.Absolute, out var uri) && uri.Scheme is "http" or "https"
            ? uri
            : throw new ArgumentException($"{option} '{text}': expected http://HOST:PORT");
}
