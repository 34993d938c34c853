using BenchmarkDotNet.Attributes;
using InferenceServer.Engine;
using InferenceServer.Model;

namespace InferenceServer.Benchmarks;

/// <summary>
/// One engine iteration without the model: admission checks, KV accounting, building the decode
/// rows, greedy sampling of every row (8,192-token vocabulary), streaming detokenization, stop
/// checks and handing tokens to each request's output. The model is a stand-in that returns fixed
/// logits, so what is timed is the scheduler and the sampler.
/// </summary>
public class SchedulerIterationBenchmark
{
    private const int Vocabulary = 8192;
    private InferenceEngine _engine = null!;
    private FixedLogitsModel _model = null!;
    private Tokenizer.Tokenizer _tokenizer = null!;

    [Params(1, 16, 64)]
    public int Batch { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _tokenizer = BenchModels.SyntheticTokenizer(Vocabulary);
        _model = new FixedLogitsModel(slots: 64, capacity: 4096, Vocabulary);
    }

    [IterationSetup]
    public void StartSequences()
    {
        _engine = new InferenceEngine(_model, _tokenizer, new EngineOptions(), startLoop: false);
        for (var i = 0; i < Batch; i++)
        {
            _engine.Submit(new GenerationRequest
            {
                PromptTokens = [1 + i, 2, 3, 4, 5, 6, 7, 8],
                MaxTokens = 3000,
                IgnoreEos = true,
            });
        }
        // Admit and prefill: from here on every iteration is a pure decode iteration.
        while (_engine.Snapshot.Running < Batch)
            _engine.Iterate();
        _engine.Iterate();
    }

    [Benchmark]
    [InvocationCount(1000, 1)]
    public void Iteration() => _engine.Iterate();

    [IterationCleanup]
    public void Stop() => _engine.DisposeAsync().AsTask().GetAwaiter().GetResult();
}

/// <summary>A stand-in model: every row gets the same precomputed logits, so a step costs nothing.</summary>
internal sealed class FixedLogitsModel : IDecoderModel
{
    private readonly float[] _logits;

    public FixedLogitsModel(int slots, int capacity, int vocabulary)
    {
        Slots = slots;
        Capacity = capacity;
        VocabSize = vocabulary;
        var random = new Random(1);
        _logits = new float[slots * vocabulary];
        for (var i = 0; i < _logits.Length; i++)
            _logits[i] = (float)random.NextDouble() * 10;
    }

    public int Slots { get; }
    public int Capacity { get; }
    public int VocabSize { get; }
    public long KvBytesPerToken => 1024;

    public ReadOnlySpan<float> Step(int firstSlot, scoped ReadOnlySpan<SequenceStep> rows, scoped ReadOnlySpan<int> tokens) =>
        _logits.AsSpan(0, rows.Length * VocabSize);

    public void CopyPrefix(int fromSlot, int toSlot, int length)
    {
    }
}
