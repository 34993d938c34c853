using InferenceServer.Model;
using InferenceServer.ModelBuilder;
using InferenceServer.Tests;

namespace InferenceServer.Engine.Tests;

/// <summary>
/// The oracle's small Llama (real tokenizer.json, 320 tokens, 2 layers) converted once; each test
/// makes its own runner and engine over it.
/// </summary>
public sealed class EngineFixture : IDisposable
{
    private readonly TempFolder _temp = new();

    public ModelFolder Folder { get; }
    public Tokenizer.Tokenizer Tokenizer { get; }

    public EngineFixture()
    {
        var path = _temp.Combine("llama");
        DecoderModelBuilder.BuildFromHuggingFace(TestPaths.Oracle("llama"), path, new BuildOptions());
        Folder = ModelFolder.Load(path);
        Tokenizer = InferenceServer.Tokenizer.Tokenizer.Load(Folder.TokenizerPath!);
    }

    internal (DecoderRunner Runner, InferenceEngine Engine, SlowModel? Recorder) Create(int slots = 8, int capacity = 256, EngineOptions? options = null, TimeSpan stepDelay = default)
    {
        var runner = new DecoderRunner(Folder, new RunnerOptions { MaxBatch = slots, MaxSequenceLength = capacity, IntraOpThreads = 1 });
        IDecoderModel model = stepDelay > TimeSpan.Zero ? new SlowModel(runner, stepDelay) : runner;
        var engine = new InferenceEngine(model, Tokenizer, (options ?? new EngineOptions()) with { EosTokenIds = Folder.Config.Model.EosTokenId });
        return (runner, engine, model as SlowModel);
    }

    /// <summary>Greedy, past the end-of-sequence ids: a request whose tokens depend only on the model.</summary>
    public static GenerationRequest Greedy(int[] prompt, int maxTokens) => new()
    {
        PromptTokens = prompt,
        MaxTokens = maxTokens,
        IgnoreEos = true,
    };

    /// <summary>Waits until the loop has retired everything: no running or waiting sequence, no KV block held.</summary>
    public static async Task AssertIdleAsync(InferenceEngine engine)
    {
        for (var i = 0; i < 200; i++)
        {
            var s = engine.Snapshot;
            if (s.Running == 0 && s.Waiting == 0 && s.UsedBlocks == 0)
                return;
            await Task.Delay(10);
        }
        Assert.Fail($"the engine did not return to idle: {engine.Snapshot}");
    }

    public static int[] Prompt(int length, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, length).Select(_ => random.Next(3, 320)).ToArray();
    }

    public void Dispose() => _temp.Dispose();
}

/// <summary>
/// The real model, slowed down: the small test model steps in well under a millisecond, too fast
/// for tests about what happens while a request is still running.
/// </summary>
internal sealed class SlowModel(DecoderRunner runner, TimeSpan delay, TimeSpan perToken = default) : IDecoderModel
{
    private readonly List<(int FirstSlot, SequenceStep[] Rows)> _steps = [];
    private readonly ManualResetEventSlim _open = new(initialState: true);
    private readonly SemaphoreSlim _held = new(0);
    private int _holdAtStep = -1;

    /// <summary>
    /// Arms a hold: the engine stops inside the step that comes <paramref name="stepsFromNow"/> steps
    /// from now (1 is the next one), and the task completes once it is stopped there; disposing the
    /// handle lets it go on. What a test submits meanwhile is found at the very next iteration, so
    /// "a request arriving mid-decode" does not depend on how busy the machine is. Armed before the
    /// requests it is about are submitted, the hold cannot be missed: the engine cannot finish them
    /// without passing through that step, however late the test's own code runs.
    /// </summary>
    public Task<IDisposable> HoldStepAsync(int stepsFromNow)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(stepsFromNow, 1);
        lock (_steps)
        {
            _open.Reset();
            _holdAtStep = _steps.Count + stepsFromNow;
        }
        return WaitUntilHeldAsync();
    }

    private async Task<IDisposable> WaitUntilHeldAsync()
    {
        await _held.WaitAsync();
        return new Release(_open);
    }

    /// <summary>Every step the engine ran, in order: which slots, with what past and how many tokens.</summary>
    public IReadOnlyList<(int FirstSlot, SequenceStep[] Rows)> Steps
    {
        get
        {
            lock (_steps)
                return [.. _steps];
        }
    }

    public int Slots => runner.Slots;
    public int Capacity => runner.Capacity;
    public int VocabSize => runner.VocabSize;
    public long KvBytesPerToken => runner.KvBytesPerToken;

    public ReadOnlySpan<float> Step(int firstSlot, scoped ReadOnlySpan<SequenceStep> rows, scoped ReadOnlySpan<int> tokens)
    {
        bool hold;
        lock (_steps)
        {
            _steps.Add((firstSlot, rows.ToArray()));
            hold = _steps.Count == _holdAtStep;
        }
        if (hold)
        {
            _held.Release();
            _open.Wait();
        }
        Thread.Sleep(delay + (perToken * tokens.Length));
        return runner.Step(firstSlot, rows, tokens);
    }

    private sealed class Release(ManualResetEventSlim open) : IDisposable
    {
        public void Dispose() => open.Set();
    }

    public void CopyPrefix(int fromSlot, int toSlot, int length) => runner.CopyPrefix(fromSlot, toSlot, length);
}

/// <summary>An engine and its runner for one test, checked for leaks when the test ends.</summary>
public sealed class EngineUnderTest : IAsyncDisposable
{
    public EngineUnderTest(EngineFixture fixture, int slots = 8, int capacity = 256, EngineOptions? options = null, TimeSpan stepDelay = default) =>
        (Runner, Engine, Recorder) = fixture.Create(slots, capacity, options, stepDelay);

    public DecoderRunner Runner { get; }
    public InferenceEngine Engine { get; }

    /// <summary>The steps the engine ran (when the test asked for a slowed-down model).</summary>
    internal SlowModel? Recorder { get; }

    /// <summary>Waits until the loop has retired everything: no running or waiting sequence, no KV block held.</summary>
    public Task AssertIdleAsync() => EngineFixture.AssertIdleAsync(Engine);

    public async ValueTask DisposeAsync()
    {
        await Engine.DisposeAsync();
        Runner.Dispose();
    }
}
