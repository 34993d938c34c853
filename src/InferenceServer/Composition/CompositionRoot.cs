using InferenceServer.Engine;
using InferenceServer.Model;
using InferenceServer.Server;

namespace InferenceServer.Composition;

/// <summary>
/// The program's wiring, in one place: a model folder, the runner for it (the dense graph on the
/// CPU or CUDA, or the paged graph on CUDA), the engine over that runner, and the
/// <see cref="ServedModel"/> the front ends are handed. The server knows only the engine it is
/// given; serve, the load generator and the server's tests compose it here.
/// </summary>
public static class CompositionRoot
{
    /// <summary>
    /// Loads a model folder and starts its engine: on the CPU over the dense graph, or with
    /// <paramref name="cuda"/> on the GPU, over a paged graph (maxBatch sequences at once, the KV
    /// pool of the engine options' KV budget, or else sized from the GPU memory left free) or a
    /// dense one (maxBatch KV slots on the device).
    /// </summary>
    public static ServedModel LoadModel(string path, int maxBatch, int contextLength, int intraOpThreads, EngineOptions engineOptions, bool cuda = false)
    {
        ArgumentNullException.ThrowIfNull(engineOptions);
        var folder = ModelFolder.Load(path);
        ServingHints.FimOrder(folder); // a bad serving.json fails here, before an engine thread starts
        if (folder.TokenizerPath is null)
            throw new ModelLoadException($"{folder.Path} has no tokenizer.json; the server needs one");
        var tokenizer = Tokenizer.Tokenizer.Load(folder.TokenizerPath);
        var options = engineOptions with { EosTokenIds = folder.Config.Model.EosTokenId };
        if (cuda && CudaRuntime.Unavailable() is { } why)
            throw new ModelLoadException($"cannot serve on CUDA: {why}");
        var name = Path.GetFileName(folder.Path);
        if (cuda && folder.Config.Model.Decoder.IsPaged)
        {
            var paged = new PagedCudaRunner(folder, new PagedRunnerOptions
            {
                MaxSequences = maxBatch,
                MaxSequenceLength = contextLength,
                KvBytes = engineOptions.KvCacheBytes,
            });
            return Serve(paged, () => new InferenceEngine(paged, tokenizer, options), engine => new ServedModel(name, folder, tokenizer, engine, maxBatch, paged));
        }
        var runner = new DecoderRunner(folder, new RunnerOptions
        {
            MaxBatch = maxBatch,
            MaxSequenceLength = contextLength,
            IntraOpThreads = intraOpThreads,
            // A dense folder on CUDA: GroupQueryAttention over KV buffers on the device.
            Device = cuda ? RunnerDevice.Cuda : RunnerDevice.Cpu,
        });
        return Serve(runner, () => new InferenceEngine(runner, tokenizer, options), engine => new ServedModel(name, folder, tokenizer, engine, maxBatch, runner));
    }

    // Whatever fails after the runner exists gives back what it holds (device memory, the engine's thread).
    private static ServedModel Serve(IDisposable runner, Func<InferenceEngine> startEngine, Func<InferenceEngine, ServedModel> serve)
    {
        InferenceEngine? engine = null;
        try
        {
            engine = startEngine();
            return serve(engine);
        }
        catch
        {
            engine?.DisposeAsync().AsTask().GetAwaiter().GetResult();
            runner.Dispose();
            throw;
        }
    }
}
