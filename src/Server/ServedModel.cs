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

/// <summary>
/// A loaded model as the front ends see it: its name, tokenizer, engine and limits. The server is
/// handed one; what runs beneath the engine is the program's composition root's business.
/// </summary>
public sealed class ServedModel : IAsyncDisposable
{
    private readonly IDisposable? _runner;

    /// <param name="runner">What the engine runs on, disposed after the engine stops.</param>
    /// <param name="chat">The chat template and its tokens; by default read from the folder's tokenizer_config.json.</param>
    public ServedModel(string name, ModelFolder folder, Tokenizer.Tokenizer tokenizer, IInferenceEngine engine, int maxBatch, IDisposable? runner = null, ChatTemplateConfig? chat = null)
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

    // An adapter on a base: the base's engine and tokenizer, its own name and adapter id.
    private ServedModel(ServedModel parent, string name, int adapterId)
    {
        Name = name;
        Folder = parent.Folder;
        Tokenizer = parent.Tokenizer;
        Engine = parent.Engine;
        MaxBatch = parent.MaxBatch;
        Fim = parent.Fim;
        Chat = parent.Chat;
        Parent = parent;
        AdapterId = adapterId;
    }

    /// <summary>
    /// The same model with a LoRA adapter its runner loaded (<paramref name="adapterId"/>), served
    /// as <paramref name="name"/>: requests that name it run with the adapter. It shares the base's
    /// engine, so disposing it does nothing; the base owns the engine.
    /// </summary>
    public ServedModel WithAdapter(string name, int adapterId)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentOutOfRangeException.ThrowIfLessThan(adapterId, 1);
        if (Parent is not null)
            throw new InvalidOperationException($"'{Name}' is an adapter already; adapters go on a base model");
        return new ServedModel(this, name, adapterId);
    }

    private readonly List<ServedModel> _adapters = [];

    /// <summary>The adapters served on this base model (<see cref="AddAdapter"/>).</summary>
    public IReadOnlyList<ServedModel> Adapters => _adapters;

    /// <summary>Serves the runner's adapter <paramref name="adapterId"/> under <paramref name="name"/> (<see cref="WithAdapter"/>).</summary>
    public ServedModel AddAdapter(string name, int adapterId)
    {
        var adapter = WithAdapter(name, adapterId);
        _adapters.Add(adapter);
        return adapter;
    }

    /// <summary>The name requests use: the model folder's, or the adapter's.</summary>
    public string Name { get; }

    /// <summary>For an adapter, the base model it runs on; null for a base model.</summary>
    public ServedModel? Parent { get; }

    /// <summary>The adapter requests of this name run with (0: the base model alone).</summary>
    public int AdapterId { get; }
    public ModelFolder Folder { get; }
    public Tokenizer.Tokenizer Tokenizer { get; }
    public IInferenceEngine Engine { get; }
    public FimTemplate? Fim { get; }
    public int MaxBatch { get; }

    /// <summary>tokenizer_config.json's chat template (null Template when the model has none) with its bos and eos tokens.</summary>
    public ChatTemplateConfig Chat { get; }
    public int ContextLength => Engine.Capacity;
    public int VocabSize => Folder.Config.Model.VocabSize;

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
        if (Parent is not null)
            return;
        await Engine.DisposeAsync().ConfigureAwait(false);
        _runner?.Dispose();
    }
}
