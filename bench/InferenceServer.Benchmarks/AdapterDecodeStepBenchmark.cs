using BenchmarkDotNet.Attributes;
using InferenceServer.Model;
using InferenceServer.Model.Lora;
using InferenceServer.ModelBuilder;
using InferenceServer.ModelBuilder.Checkpoint;

namespace InferenceServer.Benchmarks;

/// <summary>
/// What LoRA adapters cost a decode step of the ~20M-parameter model (8 rows, each adding one token
/// to a 128-token past, as <see cref="DecodeStepBenchmark"/>): the plain graph; the graph with
/// adapter inputs for all seven projections and no adapter in the step; every row with the same
/// rank-16 adapter; and rows alternating between two adapters. Adapters have random weights
/// written straight in the adapter format (the conversion is not what is timed).
/// </summary>
public class AdapterDecodeStepBenchmark
{
    private const int PastLength = 128;
    private const int Batch = 8;
    private const int Rank = 16;
    private DecoderRunner _runner = null!;
    private SequenceStep[] _rows = [];
    private int[] _tokens = [];
    private int[] _adapters = [];

    public enum AdapterMix
    {
        /// <summary>A graph without adapter inputs.</summary>
        PlainGraph,

        /// <summary>Adapter inputs, two adapters loaded, no row with one.</summary>
        NoAdapter,

        /// <summary>Every row with the same adapter.</summary>
        OneAdapter,

        /// <summary>Rows alternating between two adapters.</summary>
        TwoAdapters,
    }

    [Params(AdapterMix.PlainGraph, AdapterMix.NoAdapter, AdapterMix.OneAdapter, AdapterMix.TwoAdapters)]
    public AdapterMix Mix { get; set; }

    [Params(Precision.Fp32, Precision.Int4)]
    public Precision Weights { get; set; }

    /// <summary>ONNX Runtime's threads per operator; 0 lets it choose (one per core).</summary>
    public int IntraOpThreads { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        var config = BenchModels.Small20M;
        var folder = Mix == AdapterMix.PlainGraph
            ? BenchModels.Get(config, "llama-20m", Weights)
            : BenchModels.Get(config, "llama-20m-lora", Weights, LoraNames.Modules);
        _runner = new DecoderRunner(folder, new RunnerOptions { MaxBatch = Batch, MaxSequenceLength = 512, IntraOpThreads = IntraOpThreads });
        int[] ids = [0, 0];
        if (Mix != AdapterMix.PlainGraph)
        {
            for (var i = 0; i < 2; i++)
                ids[i] = _runner.LoadAdapter($"random-{i}", WriteRandomAdapter(config, folder, $"random-{i}", seed: (ulong)i + 1));
        }
        _adapters = Mix switch
        {
            AdapterMix.OneAdapter => Enumerable.Repeat(ids[0], Batch).ToArray(),
            AdapterMix.TwoAdapters => Enumerable.Range(0, Batch).Select(r => ids[r % 2]).ToArray(),
            _ => [],
        };
        var prompt = Enumerable.Range(0, PastLength).Select(i => 3 + i * 31 % 8000).ToArray();
        for (var slot = 0; slot < Batch; slot++)
            _runner.Step(slot, [new SequenceStep(0, PastLength)], prompt, _adapters.Length > 0 ? [_adapters[slot]] : []);
        _rows = Enumerable.Repeat(new SequenceStep(PastLength, 1), Batch).ToArray();
        _tokens = Enumerable.Range(0, Batch).Select(i => 100 + i).ToArray();
    }

    // Rank 16 for each of the seven modules: 48 for q/k/v together, 32 for gate/up, 16 for o and down.
    private static string WriteRandomAdapter(HfConfig c, ModelFolder model, string name, ulong seed)
    {
        var folder = Path.Combine(model.Path, LoraNames.AdaptersFolder, name);
        if (File.Exists(Path.Combine(folder, LoraNames.WeightsFileName)))
            return folder;
        Directory.CreateDirectory(folder);
        using var random = new RandomWeights(seed);
        var attention = c.NumAttentionHeads * c.HeadDim;
        var qkv = (c.NumAttentionHeads + 2 * c.NumKeyValueHeads) * c.HeadDim;
        var tensors = new List<AdapterTensor>();
        for (var layer = 0; layer < c.NumHiddenLayers; layer++)
        {
            foreach (var projection in LoraNames.Projections)
            {
                var (inputs, outputs) = projection.Name switch
                {
                    "self_attn.qkv_proj" => (c.HiddenSize, qkv),
                    "self_attn.o_proj" => (attention, c.HiddenSize),
                    "mlp.gate_up_proj" => (c.HiddenSize, 2 * c.IntermediateSize),
                    _ => (c.IntermediateSize, c.HiddenSize),
                };
                var rank = Rank * projection.Modules.Count;
                var a = LoraNames.A(layer, projection);
                var b = LoraNames.B(layer, projection);
                tensors.Add(new AdapterTensor(a, [1, inputs, rank], random.Read(a, [1, inputs, rank])));
                tensors.Add(new AdapterTensor(b, [1, rank, outputs], random.Read(b, [1, rank, outputs])));
            }
        }
        OnnxAdapterFile.Write(Path.Combine(folder, LoraNames.WeightsFileName), tensors);
        return folder;
    }

    [Benchmark]
    public float DecodeStep() => _runner.Step(0, _rows, _tokens, _adapters)[0];

    [GlobalCleanup]
    public void Cleanup() => _runner.Dispose();
}
