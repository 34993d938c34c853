namespace InferenceServer.Server.Tests;

/// <summary>
/// Fixes being made elsewhere that some corpus cases wait for: each such case names one in its
/// name ("pending: ..."), so the cases that fail until then are easy to find. Their expectations are
/// the correct ones, not today's behaviour.
/// </summary>
internal static class Pending
{
    /// <summary>prompt + max_tokens past int32 must be a 400 / INVALID_ARGUMENT naming the context limit, and hold no queue slot.</summary>
    public const string Int32Overflow = "pending: max_tokens overflow";

    /// <summary>Lone surrogates and invalid UTF-8 in the prompt or stop strings must be a 400.</summary>
    public const string InvalidText = "pending: invalid text";

    /// <summary>A body shorter than its Content-Length, or a bad chunk, must be a 400 (408 on a timeout), not a 500.</summary>
    public const string BrokenBody = "pending: broken body";

    /// <summary>grpc-timeout 99999999S (or H, M) is a valid, very long deadline.</summary>
    public const string LongDeadline = "pending: long deadline";

    /// <summary>Stop lists have a limit (7 strings pass, 100,000 do not) and priority a documented range.</summary>
    public const string Limits = "pending: stop and priority limits";
}

/// <summary>A corpus being built: cases by name, names unique, the pending fix appended to the name when there is one.</summary>
internal sealed class CaseTable<T>(Func<T, string> nameOf, Func<T, string, T> rename)
{
    public Dictionary<string, T> Cases { get; } = new(StringComparer.Ordinal);

    public void Add(T c, string? pending)
    {
        var name = pending is null ? nameOf(c) : $"{nameOf(c)} ({pending})";
        Assert.True(Cases.TryAdd(name, rename(c, name)), $"two corpus cases are named '{name}'");
    }
}
