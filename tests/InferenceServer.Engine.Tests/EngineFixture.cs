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

    /// <summary>Greedy, past the end-of-sequence ids: a request whose tokens depend only on the model.</summary>
    public static GenerationRequest Greedy(int[] prompt, int maxTokens) => new()
    {
        PromptTokens = prompt,
        MaxTokens = maxTokens,
        IgnoreEos = true,
    };

    public static int[] Prompt(int length, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, length).Select(_ => random.Next(3, 320)).ToArray();
    }

    public void Dispose() => _temp.Dispose();
}

/// <summary>
/// The oracle's small Llama's tokenizer alone (320 tokens), for tests that run no model: the
/// scheduler's, and the engine's over a <see cref="ScriptedExecutor"/>.
/// </summary>
public sealed class TokenizerFixture
{
    public Tokenizer.Tokenizer Tokenizer { get; } = InferenceServer.Tokenizer.Tokenizer.Load(Path.Combine(TestPaths.Oracle("llama"), "tokenizer.json"));
}

/// <summary>
/// The real model, recording every step the engine ran (which slots, with what past and how many
/// tokens); with <c>failAtStep</c>, that step throws as a failing device would.
/// </summary>
internal sealed class RecordingModel(DecoderRunner runner, int failAtStep = 0) : IDecoderModel, IDisposable
{
    private readonly List<(int FirstSlot, SequenceStep[] Rows)> _steps = [];

    /// <summary>Every step the engine ran, in order.</summary>
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

    /// <summary>Called before every step, on the engine's thread.</summary>
    public Action? BeforeStep { get; set; }

    public ReadOnlySpan<float> Step(int firstSlot, scoped ReadOnlySpan<SequenceStep> rows, scoped ReadOnlySpan<int> tokens)
    {
        BeforeStep?.Invoke();
        int count;
        lock (_steps)
        {
            _steps.Add((firstSlot, rows.ToArray()));
            count = _steps.Count;
        }
        if (count == failAtStep)
            throw new InvalidOperationException("the device failed");
        return runner.Step(firstSlot, rows, tokens);
    }

    public void CopyPrefix(int fromSlot, int toSlot, int length) => runner.CopyPrefix(fromSlot, toSlot, length);

    public bool CanInterrupt => runner.CanInterrupt;
    public void AllowInterrupt(bool allowed) => runner.AllowInterrupt(allowed);
    public void Interrupt() => runner.Interrupt();

    public bool HasMultiPositionLogits => runner.HasMultiPositionLogits;

    /// <summary>Steps that kept several positions' logits (rows that checked drafts), in order.</summary>
    public int KeptLogitsSteps => Volatile.Read(ref _keptLogitsSteps);

    private int _keptLogitsSteps;

    public ReadOnlySpan<float> StepKeepingLogits(int slot, SequenceStep row, scoped ReadOnlySpan<int> tokens, int positions, int adapter = 0)
    {
        Interlocked.Increment(ref _keptLogitsSteps);
        lock (_steps)
            _steps.Add((slot, [row]));
        return runner.StepKeepingLogits(slot, row, tokens, positions, adapter);
    }

    public void Dispose() => runner.Dispose();
}

/// <summary>
/// An engine without its thread, over the real small model (dense slots, or the paged contract
/// on the CPU): the test submits requests and steps iterations itself, so what runs in which
/// iteration is decided by the test, not by how busy the machine is.
/// </summary>
public sealed class EngineUnderTest : IAsyncDisposable
{
    private readonly IDisposable _model;

    /// <summary>Over the dense graph's slots.</summary>
    public EngineUnderTest(EngineFixture fixture, int slots = 8, int capacity = 256, EngineOptions? options = null)
    {
        var model = new RecordingModel(new DecoderRunner(fixture.Folder, new RunnerOptions { MaxBatch = slots, MaxSequenceLength = capacity, IntraOpThreads = 1 }));
        _model = Recorder = model;
        Engine = new InferenceEngine(model, fixture.Tokenizer, WithEos(fixture, options), startLoop: false);
    }

    /// <summary>Over the paged contract (<see cref="ReferencePagedModel"/>).</summary>
    internal EngineUnderTest(EngineFixture fixture, ReferencePagedModel paged, EngineOptions? options = null)
    {
        _model = Paged = paged;
        Recorder = null!;
        Engine = new InferenceEngine(paged, fixture.Tokenizer, WithEos(fixture, options), startLoop: false);
    }

    private static EngineOptions WithEos(EngineFixture fixture, EngineOptions? options) =>
        (options ?? new EngineOptions()) with { EosTokenIds = fixture.Folder.Config.Model.EosTokenId };

    public InferenceEngine Engine { get; }

    /// <summary>The dense model's steps, in order.</summary>
    internal RecordingModel Recorder { get; }

    internal ReferencePagedModel? Paged { get; }

    public GenerationOutput Submit(GenerationRequest request, CancellationToken cancellationToken = default) => Engine.Submit(request, cancellationToken);

    /// <summary>Runs one iteration.</summary>
    public void Step() => Engine.Iterate();

    /// <summary>Steps until every output has its final event, then reads each.</summary>
    public async Task<GenerationResult[]> RunAsync(params GenerationOutput[] outputs)
    {
        for (var i = 0; outputs.Any(o => !o.IsFinished); i++)
        {
            Assert.True(i < 100_000, "the engine did not finish the requests");
            Step();
        }
        var results = new GenerationResult[outputs.Length];
        for (var i = 0; i < outputs.Length; i++)
            results[i] = await outputs[i].CollectAsync();
        return results;
    }

    /// <summary>Submits one request and runs it to its end.</summary>
    public async Task<GenerationResult> RunAsync(GenerationRequest request) => (await RunAsync(Submit(request)))[0];

    /// <summary>Everything retired: no running or waiting sequence, no KV block held.</summary>
    public void AssertIdle()
    {
        var s = Engine.Snapshot;
        Assert.True(s.Running == 0 && s.Waiting == 0 && s.UsedBlocks == 0, $"the engine is not idle: {s}");
    }

    public async ValueTask DisposeAsync()
    {
        await Engine.DisposeAsync();
        _model.Dispose();
    }
}
