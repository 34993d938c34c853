using InferenceServer.Engine;
using Microsoft.AspNetCore.Http;

namespace InferenceServer.Server;

/// <summary>gRPC status codes (the subset we answer with).</summary>
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

/// <summary>A request that fails with a status both front ends can express.</summary>
public sealed class RequestException(GrpcStatus status, string message) : Exception(message)
{
    public GrpcStatus Status { get; } = status;

    public int HttpStatus => Status switch
    {
        GrpcStatus.InvalidArgument => 400,
        GrpcStatus.Unauthenticated => 401,
        GrpcStatus.NotFound => 404,
        GrpcStatus.ResourceExhausted => 429,
        GrpcStatus.Cancelled => 499,
        GrpcStatus.Unimplemented => 501,
        GrpcStatus.Unavailable => 503,
        GrpcStatus.DeadlineExceeded => 504,
        _ => 500,
    };

    /// <summary>OpenAI's error "type" for the status.</summary>
    public string OpenAiType => Status switch
    {
        GrpcStatus.InvalidArgument or GrpcStatus.NotFound => "invalid_request_error",
        GrpcStatus.Unauthenticated => "authentication_error",
        GrpcStatus.ResourceExhausted => "rate_limit_error",
        GrpcStatus.Unavailable => "service_unavailable",
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
        RequestValidationException => new RequestException(GrpcStatus.InvalidArgument, e.Message),
        EngineOverloadedException => new RequestException(GrpcStatus.ResourceExhausted, e.Message),
        EngineStoppedException => new RequestException(GrpcStatus.Unavailable, "the engine has stopped; the server cannot take requests"),
        BadHttpRequestException bad => new RequestException(bad.StatusCode == StatusCodes.Status408RequestTimeout ? GrpcStatus.DeadlineExceeded : GrpcStatus.InvalidArgument,
            bad.StatusCode == StatusCodes.Status408RequestTimeout ? "the request body did not arrive in time" : "the request body is malformed or incomplete"),
        OperationCanceledException => new RequestException(GrpcStatus.Cancelled, "the request was cancelled"),
        _ => null,
    };

    /// <summary>The status for any exception: <see cref="Expected"/>, else a generic internal error.</summary>
    public static RequestException From(Exception e) => Expected(e) ?? new RequestException(GrpcStatus.Internal, "internal error");

    /// <summary>What a client is told about an unexpected failure: nothing of its cause, only the id to find it in the log.</summary>
    public static RequestException Internal(string requestId) =>
        new(GrpcStatus.Internal, $"internal error (request id {requestId})");
}
