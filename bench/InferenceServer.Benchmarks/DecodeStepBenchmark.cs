using BenchmarkDotNet.Attributes;
using InferenceServer.Model;
using InferenceServer.ModelBuilder;

namespace InferenceServer.Benchmarks;

/// <summary>
/// One decode step of the ~20M-parameter model on the CPU (float32 or 4-bit weights): every row adds one token to a
/// 128-token past. Each invocation rewrites the same position, so the work is the same every time.
/// </summary>
public class DecodeStepBenchmark
{
    private const int PastLength = 128;
    private DecoderRunner _runner = null!;
    private SequenceStep[] _rows = [];
    private int[] _tokens = [];

    [Params(1, 8)]
    public int Batch { get; set; }

    [Params(Precision.Fp32, Precision.Int4)]
    public Precision Weights { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        var folder = BenchModels.Get(BenchModels.Small20M, "llama-20m", Weights);
        _runner = new DecoderRunner(folder, new RunnerOptions { MaxBatch = Batch, MaxSequenceLength = 512 });
        var prompt = Enumerable.Range(0, PastLength).Select(i => 3 + i * 31 % 8000).ToArray();
        for (var slot = 0; slot < Batch; slot++)
            _runner.Step(slot, [new SequenceStep(0, PastLength)], prompt);
        _rows = Enumerable.Repeat(new SequenceStep(PastLength, 1), Batch).ToArray();
        _tokens = Enumerable.Range(0, Batch).Select(i => 100 + i).ToArray();
    }

    [Benchmark]
    public float DecodeStep() => _runner.Step(0, _rows, _tokens)[0];

    [GlobalCleanup]
    public void Cleanup() => _runner.Dispose();
}
