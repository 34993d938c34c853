namespace InferenceServer.LoadGenerator.Targets;

/// <summary>
/// The "model" field a target sends: none, one name, or a comma-separated list given to requests in
/// turn (round robin), so one workload spreads evenly over several models or adapters of a server.
/// </summary>
public sealed class ModelNames
{
    private readonly string[] _names;
    private long _next = -1;

    /// <param name="list">null or empty: no name; else names separated by commas (spaces around them ignored).</param>
    public ModelNames(string? list)
    {
        _names = list?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries) ?? [];
        if (list is { Length: > 0 } && _names.Length == 0)
            throw new ArgumentException($"model names '{list}' holds no name", nameof(list));
    }

    public IReadOnlyList<string> All => _names;

    /// <summary>The name for the next request, in turn; null when there is none. Safe from any thread.</summary>
    public string? Next() => _names.Length switch
    {
        0 => null,
        1 => _names[0],
        _ => _names[(int)((ulong)Interlocked.Increment(ref _next) % (ulong)_names.Length)],
    };
}
