using InferenceServer.LoadGenerator.Measurement;

namespace InferenceServer.LoadGenerator.Soak;

/// <summary>How the requests of one kind (or of all kinds) ended.</summary>
public sealed record SoakCounts
{
    public long Sent { get; set; }
    public long Completed { get; set; }

    /// <summary>Requests given a random point to be cancelled at (some finish before it comes).</summary>
    public long CancelsScheduled { get; set; }

    /// <summary>Cancelled by the client before their answer ended.</summary>
    public long Cancelled { get; set; }

    /// <summary>Refused as overload: HTTP 429 or gRPC RESOURCE_EXHAUSTED.</summary>
    public long Rejected { get; set; }

    /// <summary>Any other error (by status in <see cref="SoakTally.Failures"/>).</summary>
    public long Failed { get; set; }

    /// <summary>Sent, but no final answer and no error came back: still pending after the drain, or a response that just stopped.</summary>
    public long Lost { get; set; }

    internal void Add(SoakCounts other)
    {
        Sent += other.Sent;
        Completed += other.Completed;
        CancelsScheduled += other.CancelsScheduled;
        Cancelled += other.Cancelled;
        Rejected += other.Rejected;
        Failed += other.Failed;
        Lost += other.Lost;
    }
}

/// <summary>The outcome of every request of a soak, by kind; thread-safe.</summary>
public sealed class SoakTally
{
    /// <summary>Failures that mean an answer stopped without its end or an error: the request is lost, not failed.</summary>
    private static readonly HashSet<string> Incomplete = new(StringComparer.Ordinal) { "grpc:NO_FINISH", "stream:truncated", "body:truncated" };

    private readonly Lock _lock = new();
    private readonly Dictionary<string, SoakCounts> _byKind = new(StringComparer.Ordinal);
    private readonly SortedDictionary<string, long> _failures = new(StringComparer.Ordinal);
    private readonly SortedDictionary<string, string> _firstMessages = new(StringComparer.Ordinal);

    public void Sent(string kind, bool cancelScheduled)
    {
        lock (_lock)
        {
            var counts = For(kind);
            counts.Sent++;
            if (cancelScheduled)
                counts.CancelsScheduled++;
        }
    }

    public void Ended(string kind, RequestRecord record)
    {
        ArgumentNullException.ThrowIfNull(record);
        lock (_lock)
        {
            var counts = For(kind);
            switch (record.Outcome)
            {
                case RequestOutcome.Completed:
                    counts.Completed++;
                    break;
                case RequestOutcome.Cancelled:
                    counts.Cancelled++;
                    break;
                default:
                    var key = record.ErrorKey ?? "unknown";
                    if (key is "http:429" or "grpc:RESOURCE_EXHAUSTED")
                        counts.Rejected++;
                    else if (Incomplete.Contains(key))
                        counts.Lost++;
                    else
                        counts.Failed++;
                    _failures[key] = _failures.GetValueOrDefault(key) + 1;
                    _firstMessages.TryAdd(key, record.ErrorMessage ?? "");
                    break;
            }
        }
    }

    /// <summary>A request that never returned, counted when the soak gives up waiting for it.</summary>
    public void Abandoned(string kind)
    {
        lock (_lock)
            For(kind).Lost++;
    }

    public SoakCounts Total()
    {
        lock (_lock)
        {
            var total = new SoakCounts();
            foreach (var counts in _byKind.Values)
                total.Add(counts);
            return total;
        }
    }

    public IReadOnlyDictionary<string, SoakCounts> ByKind()
    {
        lock (_lock)
            return _byKind.ToDictionary(p => p.Key, p => p.Value with { }, StringComparer.Ordinal);
    }

    /// <summary>Every error status (rejections and incomplete answers too) and how often it came.</summary>
    public IReadOnlyDictionary<string, long> Failures()
    {
        lock (_lock)
            return new SortedDictionary<string, long>(_failures, StringComparer.Ordinal);
    }

    /// <summary>The first message seen for each error status.</summary>
    public IReadOnlyDictionary<string, string> FirstMessages()
    {
        lock (_lock)
            return new SortedDictionary<string, string>(_firstMessages, StringComparer.Ordinal);
    }

    private SoakCounts For(string kind)
    {
        if (!_byKind.TryGetValue(kind, out var counts))
            _byKind[kind] = counts = new SoakCounts();
        return counts;
    }
}
