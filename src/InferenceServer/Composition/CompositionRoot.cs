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
    /// <param name="adapters">LoRA adapters to load on the dense runner before its engine starts: (name served, adapter folder); null: every adapter in the folder's adapters/ (none when the graph has no adapter inputs).</param>
    public static ServedModel LoadModel(string path, int maxBatch, int contextLength, int intraOpThreads, EngineOptions engineOptions, bool cuda = false,
        IReadOnlyList<(string Name, string Path)>? adapters = null)
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
            if (adapters is { Count: > 0 })
                throw new ModelLoadException($"{folder.Path}: adapters are not built for the paged CUDA runner; serve adapters on a dense base (--device cpu)");
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
        var loaded = new List<(string Name, int Id)>();
        try
        {
            adapters ??= FolderAdapters(folder, runner);
            foreach (var (adapterName, adapterPath) in adapters)
                loaded.Add((adapterName, runner.LoadAdapter(adapterName, adapterPath)));
        }
        catch
        {
            runner.Dispose();
            throw;
        }
        return Serve(runner, () => new InferenceEngine(runner, tokenizer, options), engine => new ServedModel(name, folder, tokenizer, engine, maxBatch, runner), loaded);
    }

    /// <summary>
    /// Loads several model folders, each with its own engine, into what one server serves. The KV
    /// budget is split evenly: each model's engine gets <see cref="EngineOptions.KvCacheBytes"/> / N
    /// (0 stays 0: all of each model's slots on the CPU). Adapters go on the model whose path
    /// <see cref="AdapterOption.Model"/> names (empty: the first model). Names must be unique across
    /// models and adapters. Whatever fails gives back the models already loaded.
    /// </summary>
    public static ServedModels LoadModels(IReadOnlyList<string> paths, IReadOnlyList<AdapterOption>? adapters, int maxBatch, int contextLength, int intraOpThreads,
        EngineOptions engineOptions, bool cuda = false)
    {
        ArgumentNullException.ThrowIfNull(paths);
        ArgumentNullException.ThrowIfNull(engineOptions);
        if (paths.Count == 0)
            throw new ArgumentException("no model to serve", nameof(paths));
        if (cuda && paths.Count > 1 && engineOptions.KvCacheBytes == 0)
            throw new ArgumentException("several models on CUDA need --kv-cache-bytes (split between them); without it the first would take the whole GPU");
        var names = paths.Select(p => Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(p)))).ToArray();
        adapters ??= [];
        foreach (var adapter in adapters)
        {
            if (adapter.Model.Length > 0 && !names.Contains(adapter.Model, StringComparer.Ordinal))
                throw new ArgumentException($"adapter '{adapter.Name}' is for model '{adapter.Model}', which is not served (models: {string.Join(", ", names)})");
        }
        var share = engineOptions with { KvCacheBytes = engineOptions.KvCacheBytes / paths.Count };
        var served = new List<ServedModel>();
        try
        {
            for (var i = 0; i < paths.Count; i++)
            {
                var mine = adapters.Where(a => a.Model == names[i] || (a.Model.Length == 0 && i == 0)).Select(a => (a.Name, a.Path)).ToArray();
                var model = LoadModel(paths[i], maxBatch, contextLength, intraOpThreads, share, cuda, adapters.Count > 0 ? mine : null);
                served.Add(model);
            }
            return new ServedModels(served.SelectMany(model => model.Adapters.Prepend(model)));
        }
        catch
        {
            foreach (var model in served)
                model.DisposeAsync().AsTask().GetAwaiter().GetResult();
            throw;
        }
    }

    // By default a base built with adapter inputs serves every adapter in its folder's adapters/, each under its folder's name.
    private static List<(string Name, string Path)> FolderAdapters(ModelFolder folder, DecoderRunner runner)
    {
        var root = Path.Combine(folder.Path, Model.Lora.LoraNames.AdaptersFolder);
        if (!runner.SupportsAdapters || runner.Device != RunnerDevice.Cpu || !Directory.Exists(root))
            return [];
        return [.. Directory.GetDirectories(root).Order(StringComparer.Ordinal).Select(dir => (Path.GetFileName(dir), dir))];
    }

    // Whatever fails after the runner exists gives back what it holds (device memory, the engine's thread).
    private static ServedModel Serve(IDisposable runner, Func<InferenceEngine> startEngine, Func<InferenceEngine, ServedModel> serve,
        IReadOnlyList<(string Name, int Id)>? adapters = null)
    {
        InferenceEngine? engine = null;
        try
        {
            engine = startEngine();
            var model = serve(engine);
            foreach (var (name, id) in adapters ?? [])
                model.AddAdapter(name, id);
            return model;
        }
        catch
        {
            engine?.DisposeAsync().AsTask().GetAwaiter().GetResult();
            runner.Dispose();
            throw;
        }
    }
}
