using System.CommandLine;
using System.Globalization;
using InferenceServer.Engine;
using InferenceServer.LoadGenerator.Reports;
using InferenceServer.LoadGenerator.Scenarios;

namespace InferenceServer.LoadGenerator.Commands;

/// <summary>
/// The command line: the root command runs one workload against one target; "suite" starts our
/// server in this process and runs the default set of workloads and references against it.
/// </summary>
internal static class LoadCommands
{
    private static readonly Option<string> Target = new("--target", "-t")
    {
        Description = "grpc://HOST:PORT (our gRPC API), http://HOST:PORT or https:// (any OpenAI-style /v1/completions), inprocess (the engine, --model DIR) or runner (the bare model runner, --model DIR).",
        DefaultValueFactory = _ => "grpc://127.0.0.1:50051",
    };

    private static readonly Option<string> Workload = new("--workload", "-w")
    {
        Description = "concurrency (closed loop over --levels), rate (Poisson arrivals at --rates) or ide (--sessions people typing).",
        DefaultValueFactory = _ => "concurrency",
    };

    private static readonly Option<string?> Model = new("--model", "-m")
    {
        Description = "A model folder (for inprocess, runner, --reference and exact prompt lengths) or, for a server, the model name to send.",
    };

    private static readonly Option<string?> ModelName = new("--model-name") { Description = "The \"model\" field to send (default: --model unless it is a folder; our server needs none); several, comma-separated, are sent in turn, request by request (models or adapters of one server mixed evenly)." };
    private static readonly Option<string?> ApiKey = new("--api-key") { Description = "Sent as Authorization: Bearer KEY (gRPC: authorization metadata)." };
    private static readonly Option<string?> Admin = new("--admin") { Description = "Our server's HTTP root (http://HOST:PORT): GET /admin/engine before and after each level, for server-side cancellation figures." };
    private static readonly Option<string?> Tokenizer = new("--tokenizer") { Description = "tokenizer.json (or a folder with one) to cut prompts to exact token counts (default: the --model folder's)." };
    private static readonly Option<string?> Manifest = new("--manifest") { Description = "JSON list of source files to cut prompts from (default: this system's Python standard library; see workloads/)." };
    private static readonly Option<string?> Levels = new("--levels") { Description = "Stream counts of the concurrency sweep, comma-separated (default 1,2,4,8,16,32,64)." };
    private static readonly Option<string?> SuiteLevels = new("--levels") { Description = "Stream counts of the concurrency sweep, comma-separated (default 1,2,4,8; --extended: up to 64)." };
    private static readonly Option<string?> SuiteManifest = new("--manifest") { Description = "JSON list of source files to cut prompts from (default: workloads/python-stdlib.json, 22 modules of this system's Python standard library)." };
    private static readonly Option<string> Rates = new("--rates") { Description = "Arrival rates of the rate workload in requests/s, comma-separated.", DefaultValueFactory = _ => "0.5,1,2,4,8" };
    private static readonly Option<double?> Duration = new("--duration", "-d") { Description = "Seconds per level (default 20; with --requests alone, no time limit)." };
    private static readonly Option<int?> Requests = new("--requests", "-n") { Description = "Requests per level (whichever of this and --duration comes first)." };
    private static readonly Option<int> PromptTokens = new("--prompt-tokens") { Description = "Prompt length in tokens (concurrency, rate).", DefaultValueFactory = _ => 128 };
    private static readonly Option<int> OutputTokens = new("--output-tokens") { Description = "Tokens to generate per request (concurrency, rate).", DefaultValueFactory = _ => 64 };
    private static readonly Option<bool> NoIgnoreEos = new("--no-ignore-eos") { Description = "Do not send ignore_eos over HTTP (for servers that refuse the field)." };
    private static readonly Option<int> Seed = new("--seed") { Description = "Seed of every random choice: the same seed gives the same prompts, arrivals and keystrokes.", DefaultValueFactory = _ => 1 };
    private static readonly Option<int> Sessions = new("--sessions") { Description = "People typing at once (ide).", DefaultValueFactory = _ => 4 };
    private static readonly Option<int> PrefixChars = new("--prefix-chars") { Description = "Most characters before the cursor sent as the prefix (ide).", DefaultValueFactory = _ => 1500 };
    private static readonly Option<int> SuffixChars = new("--suffix-chars") { Description = "Most characters after the typed text sent as the suffix (ide).", DefaultValueFactory = _ => 500 };
    private static readonly Option<int> TypedChars = new("--typed-chars") { Description = "About how many characters one typing run types before moving elsewhere (ide).", DefaultValueFactory = _ => 200 };
    private static readonly Option<double> KeystrokeMs = new("--keystroke-ms") { Description = "Median interval between keystrokes in ms (ide).", DefaultValueFactory = _ => 150 };
    private static readonly Option<string?> Reference = new("--reference") { Description = "Also run references on the --model folder: inprocess, runner, or both (comma-separated)." };
    private static readonly Option<double?> ReferenceDuration = new("--reference-duration") { Description = "Seconds per level of reference runs (default: --duration)." };
    private static readonly Option<int> MaxBatch = new("--max-batch") { Description = "KV slots of engines started here (0: the largest level)." };
    private static readonly Option<int> ContextLength = new("--context-length") { Description = "Tokens per sequence of engines started here (0: the model's)." };
    private static readonly Option<string> Device = new("--device")
    {
        Description = "Where engines started here run: cpu (the dense graph) or cuda (a paged or a dense float16 folder on the CUDA provider; a build with -p:OrtCuda=true). The runner target and reference are the dense CPU runner.",
        DefaultValueFactory = _ => "cpu",
    };
    private static readonly Option<int> Threads = new("--threads") { Description = "ONNX Runtime intra-op threads of engines started here (0: one per core)." };
    private static readonly Option<int> IterationBudgetMs = new("--iteration-budget-ms")
    {
        Description = "Time budget per engine iteration of engines started here, in ms (0: none), as serve's option.",
        DefaultValueFactory = _ => (int)EngineOptions.InteractiveIterationBudget.TotalMilliseconds,
    };
    private static readonly Option<int> SpeculativeDrafts = new("--speculative-drafts")
    {
        Description = "Prompt-lookup drafts per step of engines started here (0: off), as serve's option.",
    };
    private static readonly Option<string?> Out = new("--out", "-o") { Description = "Output folder (default bench/results/<yyyyMMdd-HHmmss>-<target kind>)." };
    private static readonly Option<bool> NoProgress = new("--no-progress") { Description = "No live progress display (also off when output is redirected)." };
    private static readonly Option<bool> Extended = new("--extended") { Description = "suite: sweep 1,2,4,8,16,32,64 streams instead of 1,2,4,8." };
    private static readonly Option<bool> WithHttp = new("--with-http") { Description = "suite: also run the concurrency sweep over the HTTP port." };

    public static RootCommand Create()
    {
        var root = new RootCommand(
            """
            Load generator for InferenceServer and other OpenAI-style servers: one deterministic workload
            against one target, with time to first token, inter-token latency, end-to-end latency,
            throughput, cancellations and prefix-cache figures in report.json, report.md and report.html.

            Without a subcommand it runs one workload against --target; 'suite' runs the default set.
            """);
        Option[] runOptions =
        [
            Target, Workload, Model, ModelName, ApiKey, Admin, Tokenizer, Manifest, Levels, Rates, Duration, Requests, PromptTokens, OutputTokens,
            NoIgnoreEos, Seed, Sessions, PrefixChars, SuffixChars, TypedChars, KeystrokeMs, Reference, ReferenceDuration, MaxBatch, ContextLength,
            Device, Threads, IterationBudgetMs, SpeculativeDrafts, Out, NoProgress,
        ];
        foreach (var option in runOptions)
            root.Options.Add(option);
        root.SetAction((parseResult, cancellationToken) => RunAsync(parseResult, suite: false, cancellationToken));

        var suite = new Command("suite",
            "Start our server in this process on free loopback ports and run the default suite: a concurrency sweep over gRPC, IDE typing over gRPC, "
            + "and the in-process engine and bare model runner as references, on the same model.");
        Option[] suiteOptions =
        [
            Model, SuiteLevels, Duration, PromptTokens, OutputTokens, Seed, Sessions, SuiteManifest, PrefixChars, SuffixChars, TypedChars, KeystrokeMs,
            ReferenceDuration, MaxBatch, ContextLength, Device, Threads, IterationBudgetMs, SpeculativeDrafts, Out, NoProgress, Extended, WithHttp,
        ];
        foreach (var option in suiteOptions)
            suite.Options.Add(option);
        suite.SetAction((parseResult, cancellationToken) => RunAsync(parseResult, suite: true, cancellationToken));
        root.Subcommands.Add(suite);
        root.Subcommands.Add(Soak.SoakCommand.Create());
        root.Subcommands.Add(Speculation.SpeculationCommand.Create());
        return root;
    }

    private static async Task<int> RunAsync(ParseResult parseResult, bool suite, CancellationToken cancellationToken)
    {
        BenchmarkSettings settings;
        try
        {
            settings = suite ? SuiteSettings(parseResult) : RunSettings(parseResult);
            Check(settings);
        }
        catch (ArgumentException e)
        {
            await Console.Error.WriteLineAsync($"error: {e.Message}").ConfigureAwait(false);
            return 1;
        }
        var arguments = Environment.GetCommandLineArgs().Skip(1).ToArray();
        var live = !parseResult.GetValue(NoProgress) && !Console.IsOutputRedirected;
        try
        {
            BenchmarkReport? report = null;
            var folder = "";
            if (live)
                await SpectreProgress.RunAsync(async display => (report, folder) = await Benchmark.RunAsync(settings, arguments, display, cancellationToken).ConfigureAwait(false)).ConfigureAwait(false);
            else
                (report, folder) = await Benchmark.RunAsync(settings, arguments, new PlainProgress(), cancellationToken).ConfigureAwait(false);
            Console.WriteLine();
            Console.WriteLine(MarkdownReport.Render(report!));
            Console.WriteLine($"wrote {Path.GetFullPath(Path.Combine(folder, "report.json"))}, report.md and report.html");
            return 0;
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            await Console.Error.WriteLineAsync("interrupted").ConfigureAwait(false);
            return 130;
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or IOException or InvalidDataException
            or InferenceServer.Model.ModelLoadException or InferenceServer.Tokenizer.TokenizerLoadException or UnauthorizedAccessException)
        {
            await Console.Error.WriteLineAsync($"error: {e.Message}").ConfigureAwait(false);
            return 1;
        }
    }

    private static BenchmarkSettings RunSettings(ParseResult p)
    {
        var requests = p.GetValue(Requests);
        return new BenchmarkSettings
        {
            Target = p.GetValue(Target)!,
            Workload = p.GetValue(Workload)!,
            Model = p.GetValue(Model),
            ModelName = p.GetValue(ModelName),
            ApiKey = p.GetValue(ApiKey),
            Admin = p.GetValue(Admin),
            Tokenizer = p.GetValue(Tokenizer),
            Manifest = p.GetValue(Manifest),
            Out = p.GetValue(Out),
            Levels = p.GetValue(Levels) is { } levels ? ParseList(levels, "--levels", s => int.Parse(s, NumberStyles.None, CultureInfo.InvariantCulture)) : [1, 2, 4, 8, 16, 32, 64],
            Rates = ParseList(p.GetValue(Rates)!, "--rates", s => double.Parse(s, NumberStyles.Float, CultureInfo.InvariantCulture)),
            // --requests alone bounds the level by count: a day stands for no time limit.
            Duration = TimeSpan.FromSeconds(p.GetValue(Duration) ?? (requests is null ? 20 : 86_400)),
            Requests = requests,
            PromptTokens = p.GetValue(PromptTokens),
            OutputTokens = p.GetValue(OutputTokens),
            IgnoreEos = !p.GetValue(NoIgnoreEos),
            Seed = p.GetValue(Seed),
            Sessions = p.GetValue(Sessions),
            Typing = Typing(p),
            References = p.GetValue(Reference) is { } references ? ParseList(references, "--reference", s => s is "inprocess" or "runner" ? s : throw new FormatException()) : [],
            ReferenceDuration = p.GetValue(ReferenceDuration) is { } seconds ? TimeSpan.FromSeconds(seconds) : null,
            MaxBatch = p.GetValue(MaxBatch),
            ContextLength = p.GetValue(ContextLength),
            Threads = p.GetValue(Threads),
            IterationBudgetMs = p.GetValue(IterationBudgetMs),
            SpeculativeDrafts = p.GetValue(SpeculativeDrafts),
            Device = p.GetValue(Device)!,
        };
    }

    private static BenchmarkSettings SuiteSettings(ParseResult p)
    {
        IReadOnlyList<int> levels = p.GetValue(SuiteLevels) is { } text
            ? ParseList(text, "--levels", s => int.Parse(s, NumberStyles.None, CultureInfo.InvariantCulture))
            : p.GetValue(Extended) ? [1, 2, 4, 8, 16, 32, 64] : [1, 2, 4, 8];
        var manifest = p.GetValue(SuiteManifest) ?? Path.Combine(AppContext.BaseDirectory, "workloads", "python-stdlib.json");
        return new BenchmarkSettings
        {
            Target = "suite",
            Workload = "concurrency",
            Model = p.GetValue(Model) ?? Path.Combine("models", "minicoder"),
            Manifest = manifest,
            Out = p.GetValue(Out),
            Levels = levels,
            Duration = TimeSpan.FromSeconds(p.GetValue(Duration) ?? 20),
            PromptTokens = p.GetValue(PromptTokens),
            OutputTokens = p.GetValue(OutputTokens),
            Seed = p.GetValue(Seed),
            Sessions = p.GetValue(Sessions),
            Typing = Typing(p),
            ReferenceDuration = p.GetValue(ReferenceDuration) is { } seconds ? TimeSpan.FromSeconds(seconds) : null,
            MaxBatch = p.GetValue(MaxBatch),
            ContextLength = p.GetValue(ContextLength),
            Threads = p.GetValue(Threads),
            IterationBudgetMs = p.GetValue(IterationBudgetMs),
            SpeculativeDrafts = p.GetValue(SpeculativeDrafts),
            Device = p.GetValue(Device)!,
            SuiteIncludesHttp = p.GetValue(WithHttp),
        };
    }

    private static TypingOptions Typing(ParseResult p) => new()
    {
        PrefixChars = p.GetValue(PrefixChars),
        SuffixChars = p.GetValue(SuffixChars),
        TypedChars = p.GetValue(TypedChars),
        KeystrokeMs = p.GetValue(KeystrokeMs),
    };

    private static void Check(BenchmarkSettings s)
    {
        Benchmark.TargetKind(s.Target);
        if (s.Workload is not ("concurrency" or "rate" or "ide"))
            throw new ArgumentException($"--workload '{s.Workload}': expected concurrency, rate or ide");
        if (s.Levels.Count == 0 || s.Levels.Any(l => l < 1))
            throw new ArgumentException("--levels must be positive stream counts");
        if (s.Rates.Count == 0 || s.Rates.Any(r => !(r > 0)))
            throw new ArgumentException("--rates must be positive");
        if (!(s.Duration > TimeSpan.Zero))
            throw new ArgumentException("--duration must be positive");
        if (s.Requests is < 1)
            throw new ArgumentException("--requests must be positive");
        if (s.PromptTokens < 1 || s.OutputTokens < 1)
            throw new ArgumentException("--prompt-tokens and --output-tokens must be positive");
        if (s.Sessions < 1)
            throw new ArgumentException("--sessions must be positive");
        if (s.Typing.PrefixChars < 1 || s.Typing.SuffixChars < 0 || s.Typing.TypedChars < 1 || !(s.Typing.KeystrokeMs > 0))
            throw new ArgumentException("--prefix-chars, --typed-chars and --keystroke-ms must be positive, --suffix-chars not negative");
        if (s.ReferenceDuration is { } reference && !(reference > TimeSpan.Zero))
            throw new ArgumentException("--reference-duration must be positive");
    }

    private static T[] ParseList<T>(string text, string option, Func<string, T> parse)
    {
        try
        {
            return [.. text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(parse)];
        }
        catch (Exception e) when (e is FormatException or OverflowException)
        {
            throw new ArgumentException($"{option} '{text}' is not a comma-separated list of the expected values", e);
        }
    }
}
