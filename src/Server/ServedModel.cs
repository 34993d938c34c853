using InferenceServer.Engine;
using InferenceServer.Model;
using InferenceServer.Tokenizer;
using InferenceServer.Tokenizer.ChatTemplates;

namespace InferenceServer.Server;

/// <summary>Whether the server takes requests: not until the model is loaded, and not while draining.</summary>
public enum ServingState
{
    Loading,
    Serving,
    Draining,

    /// <summary>The engine stopped after a failure (a model step threw): nothing more can be served.</summary>
    Faulted,
}

/// <summary>A loaded model as the front ends see it: its name, tokenizer, engine and limits.</summary>
public sealed class ServedModel : IAsyncDisposable
{
    private readonly IDisposable? _runner;

    /// <param name="chat">The chat template and its tokens; by default read from the folder's tokenizer_config.json.</param>
    public ServedModel(string name, ModelFolder folder, Tokenizer.Tokenizer tokenizer, InferenceEngine engine, int maxBatch, IDisposable? runner = null, ChatTemplateConfig? chat = null)
    {
        ArgumentNullException.ThrowIfNull(folder);
        Chat = chat ?? LoadChat(folder);
        Name = name;
        Folder = folder;
        Tokenizer = tokenizer;
        Engine = engine;
        MaxBatch = maxBatch;
        Fim = FimTemplate.Detect(tokenizer) is { } fim ? fim with { Order = ServingHints.FimOrder(folder) } : null;
        _runner = runner;
    }

    public string Name { get; }
    public ModelFolder Folder { get; }
    public Tokenizer.Tokenizer Tokenizer { get; }
    public InferenceEngine Engine { get; }
    public FimTemplate? Fim { get; }
    public int MaxBatch { get; }

    /// <summary>tokenizer_config.json's chat template (null Template when the model has none) with its bos and eos tokens.</summary>
    public ChatTemplateConfig Chat { get; }
    public int ContextLength => Engine.Capacity;
    public int VocabSize => Folder.Config.Model.VocabSize;

    /// <summary>
    /// Loads a model folder and starts its engine: on the CPU over the dense graph, or with
    /// <paramref name="cuda"/> on the GPU, over a paged graph (maxBatch sequences at once, the KV
    /// pool of the engine options' KV budget, or else sized from the GPU memory left free) or a
    /// dense one (maxBatch KV slots on the device).
    /// </summary>
    public static ServedModel Load(string path, int maxBatch, int contextLength, int intraOpThreads, EngineOptions engineOptions, bool cuda = false)
    {
        var folder = ModelFolder.Load(path);
        ServingHints.FimOrder(folder); // a bad serving.json fails here, before an engine thread starts
        if (folder.TokenizerPath is null)
            throw new ModelLoadException($"{folder.Path} has no tokenizer.json; the server needs one");
        var tokenizer = InferenceServer.Tokenizer.Tokenizer.Load(folder.TokenizerPath);
        var options = engineOptions with { EosTokenIds = folder.Config.Model.EosTokenId };
        if (cuda && CudaRuntime.Unavailable() is { } why)
            throw new ModelLoadException($"cannot serve on CUDA: {why}");
        if (cuda && folder.Config.Model.Decoder.IsPaged)
        {
            var paged = new PagedCudaRunner(folder, new PagedRunnerOptions
            {
                MaxSequences = maxBatch,
                MaxSequenceLength = contextLength,
                KvBytes = engineOptions.KvCacheBytes,
            });
            try
            {
                var pagedEngine = new InferenceEngine(paged, tokenizer, options);
                return new ServedModel(Path.GetFileName(folder.Path), folder, tokenizer, pagedEngine, maxBatch, paged);
            }
            catch
            {
                paged.Dispose();
                throw;
            }
        }
        var runner = new DecoderRunner(folder, new RunnerOptions
        {
            MaxBatch = maxBatch,
            MaxSequenceLength = contextLength,
            IntraOpThreads = intraOpThreads,
            // A dense folder on CUDA: GroupQueryAttention over KV buffers on the device.
            Device = cuda ? RunnerDevice.Cuda : RunnerDevice.Cpu,
        });
        var engine = new InferenceEngine(runner, tokenizer, options);
        return new ServedModel(Path.GetFileName(folder.Path), folder, tokenizer, engine, maxBatch, runner);
    }

    private static ChatTemplateConfig LoadChat(ModelFolder folder)
    {
        try
        {
            return ChatTemplateConfig.Load(Path.Combine(folder.Path, "tokenizer_config.json"));
        }
        catch (Exception e) when (e is ChatTemplateException or System.Text.Json.JsonException or IOException)
        {
            throw new ModelLoadException($"{folder.Path}: cannot read the chat template: {e.Message}", e);
        }
    }

    /// <summary>
    /// Runs one short generation through the whole engine (a prefill, then decode steps), so the
    /// first client does not pay for what a runtime does on its first runs: kernel selection and
    /// memory planning on the CPU, kernel loading on CUDA.
    /// </summary>
    public async Task WarmUpAsync(CancellationToken cancellationToken = default)
    {
        var prompt = Enumerable.Range(0, Math.Min(16, ContextLength - 4)).Select(i => i % VocabSize).ToArray();
        var request = new GenerationRequest { PromptTokens = prompt, MaxTokens = 2, IgnoreEos = true };
        await Engine.Submit(request, cancellationToken).CollectAsync(cancellationToken).ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync()
    {
        await Engine.DisposeAsync().ConfigureAwait(false);
        _runner?.Dispose();
    }
}
