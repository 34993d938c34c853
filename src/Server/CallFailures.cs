using InferenceServer.Engine;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace InferenceServer.Server;

/// <summary>What both front ends answer when a call fails, and the one place an unexpected failure is logged.</summary>
internal static partial class CallFailures
{
    /// <summary>A call the server ended because the shutdown's grace period was over.</summary>
    public static RequestException ShuttingDown() =>
        new(RequestErrorCode.Unavailable, "the generation was cancelled by the server (it is shutting down)");

    /// <summary>
    /// The status for <paramref name="e"/>: a cancellation by the shutdown is UNAVAILABLE, one by the
    /// call's deadline DEADLINE_EXCEEDED; expected failures keep their own status and message. Any
    /// other exception is a bug or a fault: it is logged here, once, with the request id and the
    /// exception, and the client learns only that id.
    /// </summary>
    public static RequestException Classify(Exception e, HttpContext context, ServerState state, ILogger logger, bool deadlinePassed = false)
    {
        ArgumentNullException.ThrowIfNull(e);
        ArgumentNullException.ThrowIfNull(context);
        if (e is OperationCanceledException && state.Cutoff.IsCancellationRequested)
            return ShuttingDown();
        if (e is OperationCanceledException && deadlinePassed)
            return new RequestException(RequestErrorCode.DeadlineExceeded, "the deadline passed");
        if (RequestException.Expected(e) is { } expected)
            return expected;
        var id = RequestRecord.IdOf(context);
        Unexpected(logger, context.Request.Method, context.Request.Path, id, e);
        return RequestException.Internal(id);
    }

    [LoggerMessage(EventId = 2, Level = LogLevel.Error, Message = "{Method} {Path} failed unexpectedly (request id {RequestId})")]
    private static partial void Unexpected(ILogger logger, string method, string path, string requestId, Exception exception);
}
