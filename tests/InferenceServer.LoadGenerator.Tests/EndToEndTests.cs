using InferenceServer.Engine;
using InferenceServer.LoadGenerator.Measurement;
using InferenceServer.LoadGenerator.Reports;
using InferenceServer.LoadGenerator.Targets;
using InferenceServer.LoadGenerator.Scenarios;
using InferenceServer.ModelBuilder;
using InferenceServer.Tests;

namespace InferenceServer.LoadGenerator.Tests;

/// <summary>Our real server, in this process on loopback, serving the oracle's small Llama (320 tokens, no fill-in-the-middle tokens).</summary>
public sealed class ServerFixture : IAsyncLifetime
{
    private readonly TempFolder _temp = new();

    public EmbeddedServer Server { get; private set; } = null!;
    public string ModelPath { get; private set; } = "";
    public SourceLibrary Library { get; private set; } = null!;
    public Tokenizer.Tokenizer Tokenizer { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        ModelPath = _temp.Combine("llama");
        DecoderModelBuilder.BuildFromHuggingFace(TestPaths.Oracle("llama"), ModelPath, new BuildOptions());
        Server = await EmbeddedServer.StartAsync(ModelPath, maxBatch: 4, contextLength: 256, threads: 1, cuda: false, EngineOptions.InteractiveIterationBudget, CancellationToken.None);
        Tokenizer = InferenceServer.Tokenizer.Tokenizer.Load(Path.Combine(ModelPath, "tokenizer.json"));
        // Prompts are cut from this repository's own C# sources.
        var sources = Directory.GetFiles(Path.Combine(TestPaths.RepoRoot, "src", "Engine"), "*.cs", SearchOption.AllDirectories)
            .Select(f => new ManifestFile(Path.GetRelativePath(TestPaths.RepoRoot, f)))
            .ToArray();
        Library = new SourceLibrary(new SourceManifest { Root = TestPaths.RepoRoot, Files = sources });
    }

    public async Task DisposeAsync()
    {
        await Server.DisposeAsync();
        _temp.Dispose();
    }
}

public sealed class EndToEndTests(ServerFixture fixture) : IClassFixture<ServerFixture>
{
    private static readonly SweepOptions Sweep = new() { Duration = TimeSpan.FromSeconds(2), OutputTokens = 16, Seed = 1 };

    [Fact]
    public async Task A_concurrency_sweep_over_grpc_streams_tokens_without_errors()
    {
        await using var target = new GrpcTarget(fixture.Server.GrpcAddress, model: null, apiKey: null);
        using var counters = new InProcessCounters(fixture.Server.Model.Engine);
        var run = await ConcurrencyWorkload.RunAsync("gRPC", target, Prompts(), [1, 2], Sweep, counters, SilentProgress.Instance, CancellationToken.None);
        AssertHealthy(run);
        // The server's usage comes back on the last message.
        Assert.All(run.Levels, l => Assert.InRange(l.MeanPromptTokens!.Value, 40, 49));
        Assert.All(run.Levels, l => Assert.Equal("meter", l.Cancellation!.ServerSource));
    }

    [Fact]
    public async Task A_concurrency_sweep_over_http_streams_tokens_without_errors()
    {
        await using var target = new OpenAiHttpTarget(fixture.Server.HttpAddress, model: null, apiKey: null);
        using var admin = new AdminEndpointCounters(fixture.Server.HttpAddress, apiKey: null);
        var run = await ConcurrencyWorkload.RunAsync("HTTP", target, Prompts(), [1, 2], Sweep, admin, SilentProgress.Instance, CancellationToken.None);
        AssertHealthy(run);
        Assert.All(run.Levels, l => Assert.InRange(l.MeanPromptTokens!.Value, 40, 49));
        // GET /admin/engine answered before and after each level.
        Assert.All(run.Levels, l => Assert.Equal("admin", l.Cancellation!.ServerSource));
        Assert.All(run.Levels, l => Assert.Equal(0, l.Cancellation!.ServerCancellations));
    }

    [Fact]
    public async Task IDE_typing_over_http_falls_back_to_plain_prompts_and_cancels_on_the_server()
    {
        await using var target = new OpenAiHttpTarget(fixture.Server.HttpAddress, model: null, apiKey: null);
        using var admin = new AdminEndpointCounters(fixture.Server.HttpAddress, apiKey: null);
        var options = new IdeOptions
        {
            Sessions = 2,
            Seed = 3,
            MaxRequests = 40,
            Duration = TimeSpan.FromSeconds(30),
            Typing = new TypingOptions { PrefixChars = 120, SuffixChars = 40, TypedChars = 30, KeystrokeMs = 3 },
        };
        var run = await IdeWorkload.RunAsync("HTTP IDE", target, fixture.Library, options, admin, SilentProgress.Instance, CancellationToken.None);

        // This model has no FIM tokens: the probe saw the 400 and the requests went without a suffix.
        Assert.False(run.FillInTheMiddle);
        var level = Assert.Single(run.Levels);
        Assert.Equal(0, level.Failed);
        Assert.True(level.Completed > 0);
        Assert.Equal(40, level.Requests);
        Assert.Equal(level.Requests, level.Completed + level.Cancelled);
        // Consecutive prompts of a session share their beginning, so the prefix cache serves part of them.
        Assert.True(level.PrefixCacheShare > 0.2, $"prefix cache share {level.PrefixCacheShare}");
        Assert.Equal("admin", level.Cancellation!.ServerSource);
        // Every request the client abandoned after the server took it is a cancellation the server counted.
        Assert.InRange(level.Cancellation.ServerCancellations!.Value, 0, level.Cancelled);
    }

    [Fact]
    public async Task The_command_writes_the_three_reports_for_a_run_against_grpc()
    {
        using var output = new TempFolder();
        var settings = new BenchmarkSettings
        {
            Target = $"grpc://127.0.0.1:{fixture.Server.Options.GrpcPort}",
            Workload = "concurrency",
            Model = fixture.ModelPath,
            Levels = [1],
            Duration = TimeSpan.FromSeconds(1),
            PromptTokens = 32,
            OutputTokens = 32,
            Manifest = WriteManifest(output),
            Out = output.Combine("report"),
            References = ["runner"],
            ReferenceDuration = TimeSpan.FromSeconds(0.5),
            Threads = 1,
        };
        var (report, folder) = await Benchmark.RunAsync(settings, ["test"], SilentProgress.Instance, CancellationToken.None);
        Assert.Equal(output.Combine("report"), folder);
        foreach (var file in new[] { "report.json", "report.md", "report.html" })
            Assert.True(File.Exists(Path.Combine(folder, file)), file);
        var level = Assert.Single(Assert.Single(report.Runs).Levels);
        Assert.Equal(0, level.Failed);
        Assert.True(report.Runner!.Levels[0].StepMs!.P50 > 0);
        // The overhead needs inter-token gaps; on a loaded machine the small model's tokens can all
        // reach the client in one message, which leaves none.
        if (level.InterTokenMs is not null)
            Assert.True(Assert.Single(report.ServingOverhead).Ratio > 0);
        else
            Assert.Empty(report.ServingOverhead);
        Assert.Equal("llama", report.Model);
    }

    [Theory]
    [InlineData("runner", null, "gpu", "expected cpu or cuda")]
    [InlineData("runner", null, "cuda", "dense CPU runner")]
    [InlineData("inprocess", "runner", "cuda", "dense CPU runner")]
    public async Task A_device_the_target_cannot_use_is_refused_before_anything_runs(string target, string? reference, string device, string expected)
    {
        var settings = new BenchmarkSettings
        {
            Target = target,
            Model = fixture.ModelPath,
            Device = device,
            References = reference is null ? [] : [reference],
        };
        var e = await Assert.ThrowsAsync<ArgumentException>(() => Benchmark.RunAsync(settings, ["test"], SilentProgress.Instance, CancellationToken.None));
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_engine_on_cuda_without_a_cuda_build_or_paged_folder_stops_with_the_reason()
    {
        var settings = new BenchmarkSettings { Target = "inprocess", Model = fixture.ModelPath, Device = "cuda", Levels = [1], Duration = TimeSpan.FromSeconds(1) };
        // Here: no CUDA provider in the build; on a CUDA machine: this dense folder is not the paged graph.
        var e = await Assert.ThrowsAsync<InferenceServer.Model.ModelLoadException>(() => Benchmark.RunAsync(settings, ["test"], SilentProgress.Instance, CancellationToken.None));
        Assert.Contains("CUDA", e.Message, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public async Task The_setup_table_names_the_gpu_or_says_there_is_none()
    {
        using var output = new TempFolder();
        var settings = new BenchmarkSettings
        {
            Target = "inprocess",
            Model = fixture.ModelPath,
            Levels = [1],
            Duration = TimeSpan.FromSeconds(0.5),
            PromptTokens = 16,
            OutputTokens = 4,
            Manifest = WriteManifest(output),
            Out = output.Combine("report"),
            Threads = 1,
        };
        var (report, folder) = await Benchmark.RunAsync(settings, ["test"], SilentProgress.Instance, CancellationToken.None);
        var markdown = File.ReadAllText(Path.Combine(folder, "report.md"));
        Assert.Contains($"| GPU | {report.Environment.Gpu ?? "—"} |", markdown, StringComparison.Ordinal);
    }

    private PromptSource Prompts() => new(fixture.Library, fixture.Tokenizer, promptTokens: 48, seed: 1);

    private string WriteManifest(TempFolder folder)
    {
        var path = folder.Combine("manifest.json");
        File.WriteAllText(path, $"{{\"root\": \"{TestPaths.RepoRoot}\", \"files\": [{{\"path\": \"src/Engine/InferenceEngine.cs\"}}]}}");
        return path;
    }

    private static void AssertHealthy(RunReport run)
    {
        Assert.Equal(2, run.Levels.Count);
        foreach (var level in run.Levels)
        {
            Assert.True(level.Failed == 0, $"{level.Label}: {level.FirstError}");
            Assert.Equal(0, level.Cancelled);
            Assert.True(level.Completed > 0, level.Label);
            Assert.True(level.OutputTokensPerSecond > 0, level.Label);
            Assert.True(level.TimeToFirstTokenMs!.P50 > 0);
            Assert.NotNull(level.InterTokenMs);
            Assert.NotNull(level.EndToEndMs);
        }
        Assert.NotNull(run.TimeToFirstTokenHistogram);
    }
}
