using InferenceServer.Engine;

namespace InferenceServer.Server;

/// <summary>
/// What a server serves: one or more base models, each with its own engine, and the adapters loaded
/// on them, every one under a name of its own. A request's model name picks one
/// (<see cref="Find"/>); a request that names none gets the first model, so a server of one model
/// answers as it always did. Names are unique across models and adapters.
/// </summary>
public sealed class ServedModels : IAsyncDisposable
{
    private readonly Dictionary<string, ServedModel> _byName = new(StringComparer.Ordinal);

    /// <param name="models">Base models and their adapters (<see cref="ServedModel.WithAdapter"/>), in the order listings show them; the first base model is the default.</param>
    public ServedModels(IEnumerable<ServedModel> models)
    {
        ArgumentNullException.ThrowIfNull(models);
        All = [.. models];
        Bases = [.. All.Where(m => m.Parent is null)];
        if (Bases.Count == 0)
            throw new ArgumentException("a server needs at least one base model", nameof(models));
        foreach (var model in All)
        {
            if (!_byName.TryAdd(model.Name, model))
                throw new ArgumentException($"two served models are named '{model.Name}'; give each model and adapter its own name", nameof(models));
            if (model.Parent is { } parent && !Bases.Contains(parent))
                throw new ArgumentException($"adapter '{model.Name}' is on '{parent.Name}', which is not served", nameof(models));
        }
    }

    /// <summary>One model, no adapters: the single-model server.</summary>
    public ServedModels(ServedModel model)
        : this([model])
    {
    }

    /// <summary>Every served name: base models and adapters.</summary>
    public IReadOnlyList<ServedModel> All { get; }

    /// <summary>The base models, each with its own engine.</summary>
    public IReadOnlyList<ServedModel> Bases { get; }

    /// <summary>What a request that names no model gets.</summary>
    public ServedModel Default => Bases[0];

    /// <summary>
    /// The model or adapter a request names; empty or null: <see cref="Default"/>. An unknown name
    /// is a <see cref="RequestErrorCode.NotFound"/> whose message lists what is served.
    /// </summary>
    public ServedModel Find(string? name)
    {
        if (string.IsNullOrEmpty(name))
            return Default;
        return _byName.TryGetValue(name, out var model) ? model : throw NotFound(name);
    }

    /// <summary>The adapter <paramref name="adapter"/> of the model named <paramref name="name"/> (empty: the default model); an empty adapter is the model itself.</summary>
    public ServedModel Find(string? name, string? adapter)
    {
        var model = Find(name);
        if (string.IsNullOrEmpty(adapter))
            return model;
        var found = Find(adapter);
        var root = model.Parent ?? model;
        if (found.Parent != root)
        {
            throw new RequestException(RequestErrorCode.NotFound, found.Parent is null
                ? $"'{adapter}' is a model, not an adapter of '{root.Name}'"
                : $"adapter '{adapter}' is on '{found.Parent.Name}', not on '{root.Name}'");
        }
        return found;
    }

    public RequestException NotFound(string name) =>
        new(RequestErrorCode.NotFound, $"The model '{name}' does not exist; this server serves {string.Join(", ", All.Select(m => $"'{m.Name}'"))}");

    /// <summary>Base models whose engine stopped after a failure.</summary>
    public IEnumerable<ServedModel> Faulted => Bases.Where(m => m.Engine.Fault is not null);

    public async ValueTask DisposeAsync()
    {
        foreach (var model in Bases)
            await model.DisposeAsync().ConfigureAwait(false);
    }
}
