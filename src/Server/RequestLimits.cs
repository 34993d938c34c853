using System.Text;

namespace InferenceServer.Server;

/// <summary>
/// Limits on what one request may ask for, the same on gRPC, /v1/completions and /infill, so no
/// client number can cost other clients time or memory: stop strings are matched against every
/// token's text, and a priority decides who runs first.
/// </summary>
public sealed record RequestLimits
{
    /// <summary>Lowest priority a request may ask for (lower runs later; any client may yield).</summary>
    public const int MinPriority = -1000;

    /// <summary>The largest <see cref="MaxPriority"/> an operator may set.</summary>
    public const int PriorityCeiling = 1000;

    /// <summary>Most stop token ids in one request (each generated token is looked up in them).</summary>
    public const int MaxStopTokenIds = 64;

    /// <summary>Most stop strings in one request (editor plugins send up to about ten).</summary>
    public int MaxStopStrings { get; init; } = 16;

    /// <summary>Longest stop string, in UTF-8 bytes.</summary>
    public int MaxStopStringBytes { get; init; } = 256;

    /// <summary>
    /// Highest priority a request may ask for. The default, 0, lets clients lower their own
    /// priority but not run ahead of others; raise it where clients are trusted to rank their work.
    /// </summary>
    public int MaxPriority { get; init; }

    /// <summary>Why the stop strings are refused, or null when they are within the limits.</summary>
    public string? CheckStop(IReadOnlyList<string> stop)
    {
        ArgumentNullException.ThrowIfNull(stop);
        if (stop.Count > MaxStopStrings)
            return $"stop takes at most {MaxStopStrings} strings, got {stop.Count}";
        foreach (var text in stop)
        {
            if (string.IsNullOrEmpty(text))
                return "stop strings cannot be empty";
            // A string too long to be within the limit is refused before its bytes are counted.
            if (text.Length > MaxStopStringBytes || Encoding.UTF8.GetByteCount(text) > MaxStopStringBytes)
                return $"stop strings may be at most {MaxStopStringBytes} bytes (UTF-8) each";
        }
        return null;
    }

    /// <summary>Why the stop token ids are refused, or null when there are few enough.</summary>
    public static string? CheckStopTokenIds(IReadOnlyList<int> ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
        return ids.Count > MaxStopTokenIds ? $"stop_token_ids takes at most {MaxStopTokenIds} ids, got {ids.Count}" : null;
    }

    /// <summary>Why the priority is refused, or null when it is within the range.</summary>
    public string? CheckPriority(int priority) =>
        priority < MinPriority || priority > MaxPriority
            ? $"priority must be between {MinPriority} and {MaxPriority}, got {priority}"
            : null;
}
