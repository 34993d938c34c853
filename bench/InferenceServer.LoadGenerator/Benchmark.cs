using System.Globalization;
using System.Text.Json;
using InferenceServer.Engine;
using InferenceServer.LoadGenerator.Measurement;
using InferenceServer.LoadGenerator.Reports;
using InferenceServer.LoadGenerator.Targets;
using InferenceServer.LoadGenerator.Scenarios;
using InferenceServer.Model;

namespace InferenceServer.LoadGenerator;

/// <summary>Everything one invocation is asked to do (the command line, parsed).</summary>
public sealed record BenchmarkSettings
{
    /// <summary>grpc://HOST:PORT, http(s)://HOST:PORT, inprocess, runner, or suite.</summary>
    public string Target { get; init; } = "grpc://127.0.0.1:50051";

    /// <summary>concurrency, rate or ide.</summary>
    public string Workload { get; init; } = "concurrency";

    /// <summary>A model folder (inprocess, runner, references, prompt sizing) or, for a server, the model name to send.</summary>
    public string? Model { get; init; }

    /// <summary>The "model" field to send; by default --model when it is not a folder, else none.</summary>
    public string? ModelName { get; init; }

    public string? ApiKey { get; init; }
    public string? Admin { get; init; }
    public string? Tokenizer { get; init; }
    public string? Manifest { get; init; }
    public string? Out { get; init; }
    public IReadOnlyList<int> Levels { get; init; } = [1, 2, 4, 8, 16, 32, 64];
    public IReadOnlyList<double> Rates { get; init; } = [0.5, 1, 2, 4, 8];
    public TimeSpan Duration { get; init; } = TimeSpan.FromSeconds(20);
    public int? Requests { get; init; }
    public int PromptTokens { get; init; } = 128;
    public int OutputTokens { get; init; } = 64;
    public bool IgnoreEos { get; init; } = true;
    public int Seed { get; init; } = 1;
    public int Sessions { get; init; } = 4;
    public TypingOptions Typing { get; init; } = new();

    /// <summary>Reference runs on the same model: "inprocess" and/or "runner".</summary>
    public IReadOnlyList<string> References { get; init; } = [];

    /// <summary>Per level of a reference run; null: the same as <see cref="Duration"/>.</summary>
    public TimeSpan? ReferenceDuration { get; init; }

    /// <summary>KV slots for engines and runners started here; 0: the largest level.</summary>
    public int MaxBatch { get; init; }

    public int ContextLength { get; init; }
    public int Threads { get; init; }

    /// <summary>The time budget per engine iteration of engines started here, in ms (0: none).</summary>
    public int IterationBudgetMs { get; init; } = (int)EngineOptions.InteractiveIterationBudget.TotalMilliseconds;

    public TimeSpan IterationBudget => TimeSpan.FromMilliseconds(IterationBudgetMs);

    /// <summary>Prompt-lookup drafts per step of engines started here (0: off), as serve's --speculative-drafts.</summary>
    public int SpeculativeDrafts { get; init; }

    /// <summary>"cpu" or "cuda": where engines started here run (<see cref="Composition.CompositionRoot.LoadModel"/>).</summary>
    public string Device { get; init; } = "cpu";

    public bool OnCuda => Device == "cuda";

    /// <summary>The suite also runs the concurrency sweep over HTTP.</summary>
    public bool SuiteIncludesHttp { get; init; }
}

/// <summary>Runs the workloads an invocation asks for and writes report.json, report.md and report.html.</summary>
public static class Benchmark
{
    public static async Task<(BenchmarkReport Report, string Folder)> RunAsync(BenchmarkSettings settings, IReadOnlyList<string> arguments,
        IProgressDisplay progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(progress);
        var started = DateTimeOffset.Now;
        var kind = TargetKind(settings.Target);
        if (settings.Device is not ("cpu" or "cuda"))
            throw new ArgumentException($"--device '{settings.Device}': expected cpu or cuda");
        if (settings.OnCuda && (kind == "runner" || settings.References.Contains("runner")))
            throw new ArgumentException("the runner target and reference are the dense CPU runner; with --device cuda measure the engine: --target inprocess");
        var modelFolder = ModelFolderPath(settings.Model);
        if (kind is "inprocess" or "runner" or "suite" || settings.References.Count > 0)
        {
            if (modelFolder is null)
                throw new ArgumentException($"--target {settings.Target}{(settings.References.Count > 0 ? " with --reference" : "")} needs --model DIR, a model folder with {ModelFolder.ConfigFileName}");
        }
        var notes = new List<string>();
        var tokenizer = LoadTokenizer(settings.Tokenizer ?? modelFolder);
        SourceLibrary? library = null;
        if (kind != "runner" || settings.References.Contains("inprocess"))
        {
            var manifest = settings.Manifest is { } path ? SourceManifest.Load(path) : SourceManifest.PythonStandardLibrary();
            library = new SourceLibrary(manifest);
        }
        if (modelFolder is not null)
            settings = FitToContext(settings, modelFolder, tokenizer, library, notes);
        var maxBatch = MaxBatch(settings, kind);
        if (settings.OnCuda)
            notes.Add("engines started here ran the paged graph on ONNX Runtime's CUDA provider (device 0)");
        var referenceDuration = settings.ReferenceDuration ?? settings.Duration;
        var report = new BenchmarkReport
        {
            Started = started,
            Environment = EnvironmentProbe.Describe(arguments),
            Target = settings.Target,
            TargetKind = kind,
            Model = settings.ModelName ?? (modelFolder is not null ? Path.GetFileName(modelFolder) : settings.Model),
            ModelPath = modelFolder,
            Parameters = Parameters(settings, kind, library, tokenizer is not null, settings.References.Count > 0 || kind == "suite" ? referenceDuration : null),
            Notes = notes,
        };
        var prompts = library is null ? null : new PromptSource(library, tokenizer, settings.PromptTokens, settings.Seed);
        var sweep = new SweepOptions
        {
            Duration = settings.Duration,
            RequestsPerLevel = settings.Requests,
            OutputTokens = settings.OutputTokens,
            IgnoreEos = settings.IgnoreEos,
            Seed = settings.Seed,
        };
        var sentName = settings.ModelName ?? (modelFolder is null ? settings.Model : null);

        if (kind == "suite")
        {
            await using var server = await EmbeddedServer.StartAsync(modelFolder!, maxBatch, settings.ContextLength, settings.Threads, settings.OnCuda, settings.IterationBudget, cancellationToken, settings.SpeculativeDrafts).ConfigureAwait(false);
            notes.Add($"our server ran in this process on loopback (gRPC {server.GrpcAddress}, HTTP {server.HttpAddress}), {maxBatch} slots; the load generator shares its CPU");
            using var counters = new InProcessCounters(server.Model.Engine);
            await using (var grpc = new GrpcTarget(server.GrpcAddress, null, null))
            {
                report.Runs.Add(await ConcurrencyWorkload.RunAsync("gRPC concurrency", grpc, prompts!, settings.Levels, sweep, counters, progress, cancellationToken).ConfigureAwait(false));
                if (settings.SuiteIncludesHttp)
                {
                    await using var http = new OpenAiHttpTarget(server.HttpAddress, null, null);
                    report.Runs.Add(await ConcurrencyWorkload.RunAsync("HTTP concurrency", http, prompts!, settings.Levels, sweep, counters, progress, cancellationToken).ConfigureAwait(false));
                }
                report.Runs.Add(await IdeWorkload.RunAsync("gRPC IDE typing", grpc, library!, Ide(settings), counters, progress, cancellationToken).ConfigureAwait(false));
            }
            // The bare runner is the dense CPU one: on CUDA the engine in-process is the reference.
            settings = settings with { References = settings.OnCuda ? ["inprocess"] : ["inprocess", "runner"], Workload = "concurrency" };
        }
        else if (kind == "runner")
        {
            settings = settings with { References = [.. settings.References.Append("runner").Distinct(StringComparer.Ordinal)] };
        }
        else
        {
            await using var target = CreateTarget(settings, kind, modelFolder, sentName, maxBatch);
            using var admin = settings.Admin is { } address ? new AdminEndpointCounters(new Uri(address), settings.ApiKey) : null;
            using var local = target is InProcessTarget inProcess ? new InProcessCounters(inProcess.Model.Engine) : null;
            IEngineCounters? counters = (IEngineCounters?)local ?? admin;
            if (counters is null && settings.Workload == "ide")
                notes.Add("server-side cancellation figures are n/a: pass --admin http://HOST:PORT (our server's HTTP port) to read GET /admin/engine");
            report.Runs.Add(await RunWorkloadAsync(Title(kind, settings.Workload), target, settings, prompts!, library!, sweep, counters, progress, cancellationToken).ConfigureAwait(false));
        }

        var referenceSweep = sweep with { Duration = referenceDuration };
        if (settings.References.Contains("inprocess"))
        {
            await using var reference = InProcessTarget.Load(modelFolder!, maxBatch, settings.ContextLength, settings.Threads, settings.OnCuda, settings.IterationBudget, settings.SpeculativeDrafts);
            using var counters = new InProcessCounters(reference.Model.Engine);
            var run = await RunWorkloadAsync(Title("inprocess", settings.Workload) + " (reference)", reference, settings with { Duration = referenceDuration },
                prompts!, library!, referenceSweep, counters, progress, cancellationToken).ConfigureAwait(false);
            report.Runs.Add(run with { Reference = true });
        }
        if (settings.References.Contains("runner"))
        {
            var batches = settings.Workload == "concurrency" ? settings.Levels : [1];
            var runnerSettings = settings;
            report.Runner = await Task.Run(() => RunnerReference.Run(modelFolder!, batches, runnerSettings.PromptTokens, runnerSettings.OutputTokens,
                referenceDuration, runnerSettings.Threads, runnerSettings.Seed, progress, cancellationToken), cancellationToken).ConfigureAwait(false);
        }
        report.ServingOverhead.AddRange(ServingOverheads(report));
        if (library is not null && library.Problems.Count > 0)
            notes.Add($"{library.Problems.Count} manifest files were missing or differ from their sha256 (details in report.json)");

        var folder = settings.Out ?? Path.Combine("bench", "results", started.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture) + "-" + kind);
        Write(report, folder);
        return (report, folder);
    }

    private static Task<RunReport> RunWorkloadAsync(string name, ILoadTarget target, BenchmarkSettings settings, PromptSource prompts, SourceLibrary library,
        SweepOptions sweep, IEngineCounters? counters, IProgressDisplay progress, CancellationToken cancellationToken) => settings.Workload switch
    {
        "concurrency" => ConcurrencyWorkload.RunAsync(name, target, prompts, settings.Levels, sweep, counters, progress, cancellationToken),
        "rate" => RateWorkload.RunAsync(name, target, prompts, settings.Rates, sweep, counters, progress, cancellationToken),
        "ide" => IdeWorkload.RunAsync(name, target, library, Ide(settings), counters, progress, cancellationToken),
        _ => throw new ArgumentException($"unknown workload '{settings.Workload}': concurrency, rate or ide"),
    };

    /// <summary>KV slots for engines started here: enough for the workload's most concurrent requests.</summary>
    private static int MaxBatch(BenchmarkSettings settings, string kind)
    {
        if (settings.MaxBatch > 0)
            return settings.MaxBatch;
        if (kind == "suite")
            return Math.Max(settings.Levels.Max(), settings.Sessions);
        return settings.Workload switch
        {
            "ide" => settings.Sessions,
            // An open loop has no bound on requests in flight; the server's own default.
            "rate" => 8,
            _ => settings.Levels.Max(),
        };
    }

    private static IdeOptions Ide(BenchmarkSettings settings) => new()
    {
        Sessions = settings.Sessions,
        Typing = settings.Typing,
        Duration = settings.Duration,
        MaxRequests = settings.Requests,
        Seed = settings.Seed,
    };

    private static string Title(string kind, string workload)
    {
        var target = kind switch
        {
            "grpc" => "gRPC",
            "http" => "HTTP",
            "inprocess" => "in-process",
            _ => kind,
        };
        return workload == "ide" ? $"{target} IDE typing" : $"{target} {workload}";
    }

    /// <summary>The kind of a --target value; throws for anything else.</summary>
    public static string TargetKind(string target)
    {
        ArgumentNullException.ThrowIfNull(target);
        if (target is "inprocess" or "runner" or "suite")
            return target;
        if (Uri.TryCreate(target, UriKind.Absolute, out var uri))
        {
            if (uri.Scheme is "grpc" or "grpcs")
                return "grpc";
            if (uri.Scheme is "http" or "https")
                return "http";
        }
        throw new ArgumentException($"--target '{target}': expected grpc://HOST:PORT, http://HOST:PORT (or https), inprocess or runner");
    }

    private static ILoadTarget CreateTarget(BenchmarkSettings settings, string kind, string? modelFolder, string? sentName, int maxBatch)
    {
        switch (kind)
        {
            case "grpc":
            {
                var uri = new Uri(settings.Target);
                var address = new UriBuilder(uri) { Scheme = uri.Scheme == "grpcs" ? "https" : "http", Port = uri.Port }.Uri;
                return new GrpcTarget(address, sentName, settings.ApiKey);
            }
            case "http":
                return new OpenAiHttpTarget(new Uri(settings.Target), sentName, settings.ApiKey);
            case "inprocess":
                return InProcessTarget.Load(modelFolder!, maxBatch, settings.ContextLength, settings.Threads, settings.OnCuda, settings.IterationBudget, settings.SpeculativeDrafts);
            default:
                throw new ArgumentException($"--target {settings.Target} cannot take requests");
        }
    }

    /// <summary>The model folder --model names, or null when it names none (a model name for a server).</summary>
    private static string? ModelFolderPath(string? model) =>
        model is not null && File.Exists(Path.Combine(model, ModelFolder.ConfigFileName)) ? Path.GetFullPath(model) : null;

    private static Tokenizer.Tokenizer? LoadTokenizer(string? path)
    {
        if (path is null)
            return null;
        var file = Directory.Exists(path) ? Path.Combine(path, ModelFolder.TokenizerFileName) : path;
        return File.Exists(file) ? InferenceServer.Tokenizer.Tokenizer.Load(file) : null;
    }

    /// <summary>
    /// Shrinks prompts that would not fit the model's context (with room for the output): a small
    /// test model has a few hundred tokens, and a refused prompt measures nothing. Each change is noted.
    /// </summary>
    private static BenchmarkSettings FitToContext(BenchmarkSettings settings, string modelFolder, Tokenizer.Tokenizer? tokenizer, SourceLibrary? library, List<string> notes)
    {
        var modelContext = ModelFolder.Load(modelFolder).Config.Model.ContextLength;
        var context = settings.ContextLength > 0 ? Math.Min(settings.ContextLength, modelContext) : modelContext;
        if (settings.PromptTokens + settings.OutputTokens + 2 > context)
        {
            var output = Math.Min(settings.OutputTokens, context / 4);
            var prompt = Math.Max(8, context - output - 2);
            notes.Add(string.Create(CultureInfo.InvariantCulture,
                $"the model's context is {context} tokens: prompts cut from {settings.PromptTokens} to {prompt} tokens, output from {settings.OutputTokens} to {output}"));
            settings = settings with { PromptTokens = prompt, OutputTokens = output };
        }
        if (tokenizer is null || library is null || settings.Workload is not ("ide" or "suite") && settings.Target != "suite")
            return settings;
        var sample = library.DocumentNear(0, 2).Text;
        sample = sample[..Math.Min(sample.Length, 20_000)];
        var charsPerToken = (double)sample.Length / Math.Max(1, tokenizer.Encode(sample, parseSpecialTokens: false).Length);
        var typing = settings.Typing;
        var budget = (context - typing.MaxMaxTokens - 8) * charsPerToken * 0.85;
        var needed = typing.PrefixChars + typing.TypedChars + typing.SuffixChars;
        if (needed <= budget)
            return settings;
        var scale = Math.Max(0, budget) / needed;
        var fitted = typing with
        {
            PrefixChars = Math.Max(16, (int)(typing.PrefixChars * scale)),
            TypedChars = Math.Max(16, (int)(typing.TypedChars * scale)),
            SuffixChars = Math.Max(16, (int)(typing.SuffixChars * scale)),
        };
        notes.Add(string.Create(CultureInfo.InvariantCulture,
            $"the model's context is {context} tokens (~{charsPerToken:F1} characters per token): IDE prefix cut to {fitted.PrefixChars} characters, typed text to {fitted.TypedChars}, suffix to {fitted.SuffixChars}"));
        return settings with { Typing = fitted };
    }

    private static WorkloadParameters Parameters(BenchmarkSettings s, string kind, SourceLibrary? library, bool exact, TimeSpan? referenceDuration) => new()
    {
        Workload = kind == "suite" ? "suite" : s.Workload,
        Seed = s.Seed,
        DurationSeconds = s.Duration.TotalSeconds,
        RequestsPerLevel = s.Requests,
        Levels = s.Levels,
        Rates = s.Rates,
        PromptTokens = s.PromptTokens,
        PromptTokensExact = exact,
        OutputTokens = s.OutputTokens,
        IgnoreEos = s.IgnoreEos,
        Sessions = s.Sessions,
        PrefixChars = s.Typing.PrefixChars,
        SuffixChars = s.Typing.SuffixChars,
        TypedChars = s.Typing.TypedChars,
        KeystrokeMs = s.Typing.KeystrokeMs,
        Manifest = library is null ? null : s.Manifest ?? "python standard library (all *.py)",
        SourceRoot = library?.Root,
        SourceFiles = library?.Count ?? 0,
        SourceProblems = library is { Problems.Count: > 0 } ? library.Problems : null,
        ReferenceDurationSeconds = referenceDuration?.TotalSeconds,
    };

    /// <summary>p50 inter-token latency at one stream of every concurrency run over the bare decode step at batch 1 (p50).</summary>
    public static IEnumerable<ServingOverhead> ServingOverheads(BenchmarkReport report)
    {
        ArgumentNullException.ThrowIfNull(report);
        if (report.Runner?.Levels.FirstOrDefault(l => l.Batch == 1)?.StepMs is not { P50: > 0 } step)
            yield break;
        foreach (var run in report.Runs.Where(r => r.Workload == "concurrency"))
        {
            if (run.Levels.FirstOrDefault(l => l.Value == 1)?.InterTokenMs is { } itl)
                yield return new ServingOverhead { Run = run.Name, InterTokenMs = itl.P50, BareStepMs = step.P50, Ratio = itl.P50 / step.P50 };
        }
    }

    public static void Write(BenchmarkReport report, string folder)
    {
        ArgumentNullException.ThrowIfNull(report);
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "report.json"), JsonSerializer.Serialize(report, ReportJsonContext.Default.BenchmarkReport));
        File.WriteAllText(Path.Combine(folder, "report.md"), MarkdownReport.Render(report));
        File.WriteAllText(Path.Combine(folder, "report.html"), HtmlReport.Render(report));
    }
}
