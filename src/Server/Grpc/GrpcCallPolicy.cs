using Grpc.Core;
using Grpc.Core.Interceptors;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace InferenceServer.Server.Grpc;

/// <summary>
/// What every gRPC call goes through, whatever its service: the API key (health needs none: probes
/// carry none), the serving state (only health answers while loading, draining or faulted), the
/// shutdown's cutoff joined to the call's cancellation (so that calls still running when the grace
/// period ends, open-ended streams included, end with UNAVAILABLE), and the status of a failure:
/// expected ones keep theirs, a passed deadline is DEADLINE_EXCEEDED, and anything else is logged
/// once with the request id and answered INTERNAL naming only that id.
/// </summary>
internal sealed class GrpcCallPolicy(ServerOptions options, ServerState state, ILoggerFactory loggers) : Interceptor
{
    private const string HealthPrefix = "/grpc.health.v1.Health/";

    private readonly ApiKeys _keys = new(options.ApiKeys);
    private readonly ILogger _logger = loggers.CreateLogger(typeof(GrpcCallPolicy).FullName!);

    public override Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context,
        UnaryServerMethod<TRequest, TResponse> continuation) =>
        RunAsync(context, call => continuation(request, call));

    public override Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream,
        ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation) =>
        RunAsync(context, async call =>
        {
            await continuation(request, responseStream, call).ConfigureAwait(false);
            return true;
        });

    public override Task<TResponse> ClientStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream,
        ServerCallContext context, ClientStreamingServerMethod<TRequest, TResponse> continuation) =>
        RunAsync(context, call => continuation(requestStream, call));

    public override Task DuplexStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream,
        IServerStreamWriter<TResponse> responseStream, ServerCallContext context, DuplexStreamingServerMethod<TRequest, TResponse> continuation) =>
        RunAsync(context, async call =>
        {
            await continuation(requestStream, responseStream, call).ConfigureAwait(false);
            return true;
        });

    private async Task<T> RunAsync<T>(ServerCallContext context, Func<ServerCallContext, Task<T>> handler)
    {
        var http = context.GetHttpContext();
        var health = context.Method.StartsWith(HealthPrefix, StringComparison.Ordinal);
        if (!health && _keys.Required && !_keys.Accepts(context.RequestHeaders.GetValue("authorization")))
            throw Rpc(GrpcStatus.Unauthenticated, "a valid API key is required in the authorization metadata (Bearer <key>)");
        if (!health && state.State != ServingState.Serving)
            throw Rpc(GrpcStatus.Unavailable, ServerHost.Unavailable(state.State));

        using var call = new CutoffCallContext(context, http, state.Cutoff);
        try
        {
            var result = await handler(call).ConfigureAwait(false);
            // A stream that ended because the server cut it off (a health watch returns quietly) did not end well.
            if (call.CancellationToken.IsCancellationRequested && state.Cutoff.IsCancellationRequested && !context.CancellationToken.IsCancellationRequested)
                throw ToRpc(CallFailures.ShuttingDown());
            return result;
        }
        catch (RpcException)
        {
            throw;
        }
        catch (Exception e)
        {
            // A client that left hears nothing more; the status is for the log.
            if (http.RequestAborted.IsCancellationRequested)
                throw Rpc(GrpcStatus.Cancelled, "the client cancelled the call");
            throw ToRpc(CallFailures.Classify(e, http, state, _logger, deadlinePassed: context.Deadline <= DateTime.UtcNow));
        }
    }

    private static RpcException Rpc(GrpcStatus status, string message) => new(new Status((StatusCode)status, message));

    private static RpcException ToRpc(RequestException failure) => Rpc(failure.Status, failure.Message);

    /// <summary>A call's context whose cancellation also fires at the shutdown's cutoff; the rest is the call's own.</summary>
    private sealed class CutoffCallContext : ServerCallContext, IDisposable
    {
        // Where GetHttpContext() finds the request under a context that is not the library's own.
        private const string HttpContextKey = "__HttpContext";

        private readonly ServerCallContext _inner;
        private readonly CancellationTokenSource _linked;

        public CutoffCallContext(ServerCallContext inner, HttpContext http, CancellationToken cutoff)
        {
            _inner = inner;
            _linked = CancellationTokenSource.CreateLinkedTokenSource(inner.CancellationToken, cutoff);
            // The user state is the request's Items.
            inner.UserState[HttpContextKey] = http;
        }

        protected override string MethodCore => _inner.Method;
        protected override string HostCore => _inner.Host;
        protected override string PeerCore => _inner.Peer;
        protected override DateTime DeadlineCore => _inner.Deadline;
        protected override Metadata RequestHeadersCore => _inner.RequestHeaders;
        protected override CancellationToken CancellationTokenCore => _linked.Token;
        protected override Metadata ResponseTrailersCore => _inner.ResponseTrailers;
        protected override AuthContext AuthContextCore => _inner.AuthContext;
        protected override IDictionary<object, object> UserStateCore => _inner.UserState;

        protected override Status StatusCore
        {
            get => _inner.Status;
            set => _inner.Status = value;
        }

        protected override WriteOptions? WriteOptionsCore
        {
            get => _inner.WriteOptions;
            set => _inner.WriteOptions = value;
        }

        protected override Task WriteResponseHeadersAsyncCore(Metadata responseHeaders) => _inner.WriteResponseHeadersAsync(responseHeaders);

        protected override ContextPropagationToken CreatePropagationTokenCore(ContextPropagationOptions? options) =>
            _inner.CreatePropagationToken(options);

        public void Dispose() => _linked.Dispose();
    }
}
