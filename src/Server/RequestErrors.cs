using InferenceServer.Engine;
using Microsoft.AspNetCore.Http;

namespace InferenceServer.Server;

/// <summary>gRPC status codes (the subset we answer with); <see cref="RequestException.Status"/> maps a <see cref="RequestErrorCode"/> to one.</summary>
public enum GrpcStatus
{
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    ResourceExhausted = 8,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    Unauthenticated = 16,
}

/// <summary>A request that fails, with a protocol-neutral code each front end maps to its own status.</summary>
public sealed class RequestException(RequestErrorCode code, string message) : Exception(message)
{
    public RequestErrorCode Code { get; } = code;

    /// <summary>The gRPC status for the code.</summary>
    public GrpcStatus Status => Code switch
    {
        RequestErrorCode.InvalidArgument => GrpcStatus.InvalidArgument,
        RequestErrorCode.NotFound => GrpcStatus.NotFound,
        RequestErrorCode.ResourceExhausted => GrpcStatus.ResourceExhausted,
        RequestErrorCode.Unavailable => GrpcStatus.Unavailable,
        RequestErrorCode.Cancelled => GrpcStatus.Cancelled,
        RequestErrorCode.DeadlineExceeded => GrpcStatus.DeadlineExceeded,
        RequestErrorCode.Unauthenticated => GrpcStatus.Unauthenticated,
        RequestErrorCode.Unimplemented => GrpcStatus.Unimplemented,
        _ => GrpcStatus.Internal,
    };

    /// <summary>The HTTP status for the code.</summary>
    public int HttpStatus => Code switch
    {
        RequestErrorCode.InvalidArgument => 400,
        RequestErrorCode.Unauthenticated => 401,
        RequestErrorCode.NotFound => 404,
        RequestErrorCode.ResourceExhausted => 429,
        RequestErrorCode.Cancelled => 499,
        RequestErrorCode.Unimplemented => 501,
        RequestErrorCode.Unavailable => 503,
        RequestErrorCode.DeadlineExceeded => 504,
        _ => 500,
    };

    /// <summary>OpenAI's error "type" for the code.</summary>
    public string OpenAiType => Code switch
    {
        RequestErrorCode.InvalidArgument or RequestErrorCode.NotFound => "invalid_request_error",
        RequestErrorCode.Unauthenticated => "authentication_error",
        RequestErrorCode.ResourceExhausted => "rate_limit_error",
        RequestErrorCode.Unavailable => "service_unavailable",
        _ => "server_error",
    };

    /// <summary>
    /// The status for a failure the client caused or the server expects (invalid input, overload,
    /// draining, cancellation, a malformed HTTP body); null for anything else, which is a bug or a
    /// fault and is answered with <see cref="Internal"/>. Messages of expected failures describe the
    /// request, so they go to the client; an engine fault's own text does not.
    /// </summary>
    public static RequestException? Expected(Exception e) => e switch
    {
        RequestException r => r,
        // The engine's own text of a stop is about the engine, not the request.
        EngineStoppedException => new RequestException(RequestErrorCode.Unavailable, "the engine has stopped; the server cannot take requests"),
        RequestRefusedException refused => new RequestException(refused.Code, e.Message),
        BadHttpRequestException bad => new RequestException(bad.StatusCode == StatusCodes.Status408RequestTimeout ? RequestErrorCode.DeadlineExceeded : RequestErrorCode.InvalidArgument,
            bad.StatusCode == StatusCodes.Status408RequestTimeout ? "the request body did not arrive in time" : "the request body is malformed or incomplete"),
        OperationCanceledException => new RequestException(RequestErrorCode.Cancelled, "the request was cancelled"),
        _ => null,
    };

    /// <summary>The status for any exception: <see cref="Expected"/>, else a generic internal error.</summary>
    public static RequestException From(Exception e) => Expected(e) ?? new RequestException(RequestErrorCode.Internal, "internal error");

    /// <summary>What a client is told about an unexpected failure: nothing of its cause, only the id to find it in the log.</summary>
    public static RequestException Internal(string requestId) =>
        new(RequestErrorCode.Internal, $"internal error (request id {requestId})");
}
