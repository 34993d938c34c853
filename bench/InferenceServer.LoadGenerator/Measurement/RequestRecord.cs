using System.Diagnostics;

namespace InferenceServer.LoadGenerator.Measurement;

/// <summary>How a request ended, as the client saw it.</summary>
public enum RequestOutcome
{
    /// <summary>The stream ended normally (a finish reason, or [DONE]).</summary>
    Completed,

    /// <summary>The client cancelled it (the IDE workload does, on the next keystroke).</summary>
    Cancelled,

    /// <summary>An error status, a broken stream or a refused connection.</summary>
    Failed,
}

/// <summary>What one request measured. Times are milliseconds from the moment it was sent.</summary>
public sealed record RequestRecord
{
    public RequestOutcome Outcome { get; init; }

    /// <summary>Stopwatch timestamp when the request was sent, to place it on the run's timeline.</summary>
    public long SentAt { get; init; }

    /// <summary>Until the first generated token arrived; null when none did (for a cancelled request: none before its cancellation).</summary>
    public double? TimeToFirstTokenMs { get; init; }

    /// <summary>Until the last generated token arrived; null when none did.</summary>
    public double? LastTokenMs { get; init; }

    /// <summary>Until the stream ended (or the cancelled call returned).</summary>
    public double EndMs { get; init; }

    /// <summary>Generated tokens: the server's count when it reported usage, else the tokens seen in the stream.</summary>
    public int OutputTokens { get; init; }

    /// <summary>Tokens that arrived in the first stream event (servers may merge several tokens into one event).</summary>
    public int FirstEventTokens { get; init; }

    public int? PromptTokens { get; init; }
    public int? CachedPromptTokens { get; init; }
    public string? FinishReason { get; init; }

    /// <summary>For failures: the status, e.g. "grpc:INVALID_ARGUMENT" or "http:503".</summary>
    public string? ErrorKey { get; init; }
    public string? ErrorMessage { get; init; }

    /// <summary>For cancelled requests: from the cancellation to the call returning, on the client.</summary>
    public double? CancelToReturnMs { get; init; }

    /// <summary>
    /// Mean time per output token after the first: (last token - first token) / (tokens after the
    /// first event). For a cancelled request, over the tokens it saw before its cancellation. Null
    /// with fewer than two tokens.
    /// </summary>
    public double? InterTokenMs =>
        TimeToFirstTokenMs is { } first && LastTokenMs is { } last && OutputTokens > FirstEventTokens && FirstEventTokens > 0
            ? (last - first) / (OutputTokens - FirstEventTokens)
            : null;
}

/// <summary>
/// Times one streamed response: the target calls <see cref="Tokens"/> whenever generated tokens
/// arrive and <see cref="Complete"/>, <see cref="Cancelled"/> or <see cref="Failed"/> at the end.
/// It also notes when the request's token is cancelled, to time how long the call takes to return.
/// </summary>
public sealed class ResponseTimer : IDisposable
{
    private readonly long _sentAt = Stopwatch.GetTimestamp();
    private readonly CancellationTokenRegistration _registration;
    private long _cancelledAt;
    private long _firstAt, _lastAt;
    private int _tokens, _firstEventTokens;

    public ResponseTimer(CancellationToken cancellationToken) =>
        _registration = cancellationToken.Register(() => Interlocked.CompareExchange(ref _cancelledAt, Stopwatch.GetTimestamp(), 0));

    public long SentAt => _sentAt;

    /// <summary>Tokens seen in the stream so far.</summary>
    public int TokensSeen => _tokens;

    /// <summary>
    /// Notes tokens that arrived. Tokens read after the request was cancelled (already buffered
    /// when the client gave up) are not counted: the request's figures stop at its cancellation.
    /// </summary>
    public void Tokens(int count)
    {
        if (count <= 0 || Interlocked.Read(ref _cancelledAt) != 0)
            return;
        var now = Stopwatch.GetTimestamp();
        if (_tokens == 0)
        {
            _firstAt = now;
            _firstEventTokens = count;
        }
        _lastAt = now;
        _tokens += count;
    }

    public RequestRecord Complete(int? reportedOutputTokens, int? promptTokens, int? cachedPromptTokens, string? finishReason) =>
        Build(RequestOutcome.Completed) with
        {
            // The server's count wins: an SSE chunk may carry more than one token.
            OutputTokens = reportedOutputTokens is > 0 ? reportedOutputTokens.Value : _tokens,
            PromptTokens = promptTokens,
            CachedPromptTokens = cachedPromptTokens,
            FinishReason = finishReason,
        };

    public RequestRecord Cancelled()
    {
        var cancelledAt = Interlocked.Read(ref _cancelledAt);
        return Build(RequestOutcome.Cancelled) with
        {
            // The token's flag is set before its callbacks run: a call can see it before this timer noted the time.
            CancelToReturnMs = cancelledAt == 0 ? 0 : Stopwatch.GetElapsedTime(cancelledAt).TotalMilliseconds,
        };
    }

    public RequestRecord Failed(string key, string message) => Build(RequestOutcome.Failed) with { ErrorKey = key, ErrorMessage = message };

    private RequestRecord Build(RequestOutcome outcome) => new()
    {
        Outcome = outcome,
        SentAt = _sentAt,
        TimeToFirstTokenMs = _tokens > 0 ? Milliseconds(_firstAt) : null,
        LastTokenMs = _tokens > 0 ? Milliseconds(_lastAt) : null,
        EndMs = Stopwatch.GetElapsedTime(_sentAt).TotalMilliseconds,
        OutputTokens = _tokens,
        FirstEventTokens = _firstEventTokens,
    };

    private double Milliseconds(long timestamp) => Stopwatch.GetElapsedTime(_sentAt, timestamp).TotalMilliseconds;

    public void Dispose() => _registration.Dispose();
}
