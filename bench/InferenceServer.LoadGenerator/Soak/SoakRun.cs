using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using InferenceServer.Client;
using InferenceServer.LoadGenerator.Reports;
using InferenceServer.LoadGenerator.Scenarios;
using InferenceServer.LoadGenerator.Targets;
using InferenceServer.Model;

namespace InferenceServer.LoadGenerator.Soak;

/// <summary>
/// A bounded soak: our real server (started here, or one already running) under a closed loop at
/// twice saturation with random cancellations, sampled every few seconds; at the end it must have
/// answered every request, gone back to idle with no KV block in use, and kept its memory flat.
/// </summary>
public static class SoakRun
{
    public static async Task<(SoakReport Report, string Folder)> RunAsync(SoakSettings settings, IReadOnlyList<string> arguments, TextWriter log,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(log);
        var started = DateTimeOffset.Now;
        var folder = settings.Out ?? Path.Combine("bench", "results", started.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture) + "-soak");
        if (!File.Exists(Path.Combine(settings.Model, ModelFolder.ConfigFileName)))
            throw new ArgumentException($"--model '{settings.Model}' is not a model folder (no {ModelFolder.ConfigFileName}); the soak sizes its prompts with its tokenizer");
        var tokenizer = Tokenizer.Tokenizer.Load(Path.Combine(settings.Model, ModelFolder.TokenizerFileName));
        var manifest = SourceManifest.Load(settings.Manifest ?? Path.Combine(AppContext.BaseDirectory, "workloads", "python-stdlib.json"));
        var prompts = new PromptSource(new SourceLibrary(manifest), tokenizer, settings.PromptTokens, settings.Seed);

        using var probe = new ServerProbe(settings.ApiKey);
        await using var server = settings.Target is null
            ? await ServerProcess.StartAsync(settings.Server ?? throw new ArgumentException("give --server PROGRAM to start, or --target URL of a running server"),
                settings.Model, settings.ServerArguments, Path.Combine(folder, "server.log"), probe, cancellationToken).ConfigureAwait(false)
            : null;
        var http = server?.HttpAddress ?? settings.Target!;
        var grpc = server?.GrpcAddress ?? settings.Grpc ?? new UriBuilder(http) { Port = 50051 }.Uri;
        int? pid = server?.Pid ?? (settings.Pid > 0 ? settings.Pid : null);

        int? maxBatch = null;
        using (var info = new InferenceClient(grpc, settings.ApiKey))
            maxBatch = (await info.ListModelsAsync(cancellationToken).ConfigureAwait(false)).Models.FirstOrDefault()?.MaxBatch;
        var concurrency = settings.Concurrency > 0 ? settings.Concurrency
            : maxBatch is > 0 ? settings.SaturationFactor * maxBatch.Value
            : throw new InvalidOperationException("the server did not say its max batch (gRPC ListModels); pass --concurrency");
        await log.WriteLineAsync($"soak: {concurrency} in flight against HTTP {http} and gRPC {grpc} for {settings.Duration.TotalSeconds:F0} s"
            + (pid is { } p ? $", watching pid {p}" : ", RSS not watched")).ConfigureAwait(false);

        await using var httpTarget = new OpenAiHttpTarget(http, null, settings.ApiKey);
        await using var grpcTarget = new GrpcTarget(grpc, null, settings.ApiKey);
        var targets = SoakRequestKinds.All.ToDictionary(k => k, k => SoakRequestKinds.IsGrpc(k) ? (ILoadTarget)grpcTarget : httpTarget, StringComparer.Ordinal);
        using var driver = new SoakDriver(targets, prompts, settings);
        var samples = new List<SoakSample>();
        var clock = Stopwatch.StartNew();
        async Task<SoakSample> SampleAsync()
        {
            var sample = new SoakSample
            {
                Seconds = clock.Elapsed.TotalSeconds,
                RssKb = pid is { } id ? ProcessMemory.ResidentKilobytes(id) : null,
                Engine = await probe.EngineAsync(http, cancellationToken).ConfigureAwait(false),
                ClientInFlight = driver.InFlight,
            };
            samples.Add(sample);
            await log.WriteLineAsync(Line(sample, driver.Tally.Total())).ConfigureAwait(false);
            return sample;
        }

        await SampleAsync().ConfigureAwait(false);
        using var stopSampling = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var sampling = Task.Run(async () =>
        {
            using var timer = new PeriodicTimer(settings.SampleInterval);
            while (await timer.WaitForNextTickAsync(stopSampling.Token).ConfigureAwait(false))
                await SampleAsync().ConfigureAwait(false);
        }, CancellationToken.None);
        try
        {
            await driver.RunAsync(concurrency, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            await stopSampling.CancelAsync().ConfigureAwait(false);
            await sampling.ContinueWith(_ => { }, CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default).ConfigureAwait(false);
        }

        // Cancelled sequences are freed within an iteration or so; give the engine its idle timeout to get there.
        var loadEnded = clock.Elapsed;
        EngineSample? end = null;
        while (clock.Elapsed - loadEnded < settings.IdleTimeout)
        {
            end = await probe.EngineAsync(http, cancellationToken).ConfigureAwait(false);
            if (end is { Idle: true })
                break;
            await Task.Delay(200, cancellationToken).ConfigureAwait(false);
        }
        var idleAfter = (clock.Elapsed - loadEnded).TotalSeconds;
        var last = await SampleAsync().ConfigureAwait(false);
        end = last.Engine ?? end;

        var total = driver.Tally.Total();
        var rss = SoakReport.RssOf(samples, settings.WarmupFraction * settings.Duration.TotalSeconds);
        var report = new SoakReport
        {
            Started = started,
            Environment = EnvironmentProbe.Describe(arguments),
            Server = server is not null ? $"{settings.Server} (started here)" : http.ToString(),
            ServerPid = pid,
            Model = Path.GetFileName(Path.GetFullPath(settings.Model).TrimEnd(Path.DirectorySeparatorChar)),
            Concurrency = concurrency,
            ServerMaxBatch = maxBatch,
            DurationSeconds = settings.Duration.TotalSeconds,
            CancelFraction = settings.CancelFraction,
            Mix = settings.Mix,
            PromptTokens = settings.PromptTokens,
            OutputTokens = settings.OutputTokens,
            Seed = settings.Seed,
            Total = total,
            ByKind = driver.Tally.ByKind(),
            Errors = driver.Tally.Failures(),
            ErrorMessages = driver.Tally.FirstMessages(),
            EndEngine = end,
            IdleAfterSeconds = idleAfter,
            Rss = rss,
            MaxRssGrowthPercent = settings.MaxRssGrowthPercent,
            Samples = samples,
            Problems = SoakReport.Check(total, end, rss, settings.MaxRssGrowthPercent),
        };
        Directory.CreateDirectory(folder);
        await File.WriteAllTextAsync(Path.Combine(folder, "soak.json"), JsonSerializer.Serialize(report, SoakJsonContext.Default.SoakReport), cancellationToken).ConfigureAwait(false);
        await File.WriteAllTextAsync(Path.Combine(folder, "soak.md"), report.ToMarkdown(), cancellationToken).ConfigureAwait(false);
        return (report, folder);
    }

    private static string Line(SoakSample s, SoakCounts total)
    {
        var rss = s.RssKb is { } kb ? string.Create(CultureInfo.InvariantCulture, $"rss {kb / 1024.0:F1} MiB") : "rss n/a";
        var engine = s.Engine is { } e ? $"running {e.Running} waiting {e.Waiting} kv used {e.KvBlocksUsed} cached {e.KvBlocksCached} free {e.KvBlocksFree}" : "engine n/a";
        return string.Create(CultureInfo.InvariantCulture,
            $"{s.Seconds,6:F1}s {rss}, {engine}; sent {total.Sent} completed {total.Completed} cancelled {total.Cancelled} rejected {total.Rejected} failed {total.Failed} lost {total.Lost}");
    }
}
