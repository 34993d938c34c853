using System.Runtime.CompilerServices;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Health.V1;
using Grpc.Net.Client;
using InferenceServer.Protocol;

namespace InferenceServer.Client;

/// <summary>A call that ended with a gRPC status other than OK.</summary>
public sealed class GrpcCallException(int status, string message, Exception? inner = null)
    : Exception($"gRPC status {status}: {message}", inner)
{
    /// <summary>The gRPC status code (3 INVALID_ARGUMENT, 14 UNAVAILABLE, ...).</summary>
    public int Status { get; } = status;

    /// <summary>The server's grpc-message (or the client's own account of a transport failure).</summary>
    public string StatusMessage { get; } = message;
}

/// <summary>
/// Calls the inference.v1.Inference service and grpc.health.v1.Health over one gRPC channel:
/// plaintext HTTP/2 for http:// addresses, TLS for https://. Failures are <see cref="GrpcCallException"/>;
/// a cancelled token ends a call with <see cref="OperationCanceledException"/>, and stopping a stream's
/// enumeration early cancels the call on the server.
/// </summary>
public sealed class InferenceClient : IDisposable
{
    private readonly GrpcChannel _channel;
    private readonly Inference.InferenceClient _inference;
    private readonly Health.HealthClient _health;
    private readonly Metadata? _headers;

    /// <param name="address">The server's gRPC port, e.g. http://127.0.0.1:50051.</param>
    /// <param name="apiKey">Sent on every call as "authorization: Bearer KEY".</param>
    /// <param name="handler">The HTTP handler to send through (TLS settings, say); the client disposes it.</param>
    public InferenceClient(Uri address, string? apiKey = null, HttpMessageHandler? handler = null)
    {
        ArgumentNullException.ThrowIfNull(address);
        _channel = GrpcChannel.ForAddress(address, new GrpcChannelOptions
        {
            HttpHandler = handler ?? new SocketsHttpHandler { EnableMultipleHttp2Connections = true },
            DisposeHttpClient = true,
            // The server enforces its own limit; the client takes what it is sent.
            MaxReceiveMessageSize = null,
        });
        _inference = new Inference.InferenceClient(_channel);
        _health = new Health.HealthClient(_channel);
        _headers = apiKey is null ? null : new Metadata { { "authorization", "Bearer " + apiKey } };
    }

    public Task<GenerateResponse> GenerateAsync(GenerateRequest request, TimeSpan? deadline = null, CancellationToken cancellationToken = default) =>
        RunAsync(_inference.GenerateAsync(request, Options(deadline, cancellationToken)), cancellationToken);

    /// <summary>The deltas of a generation; the last carries the finish reason and the usage.</summary>
    public IAsyncEnumerable<GenerateResponse> GenerateStreamAsync(GenerateRequest request, TimeSpan? deadline = null, CancellationToken cancellationToken = default) =>
        ReadAllAsync(() => _inference.GenerateStream(request, Options(deadline, cancellationToken)), cancellationToken);

    public Task<TokenizeResponse> TokenizeAsync(TokenizeRequest request, CancellationToken cancellationToken = default) =>
        RunAsync(_inference.TokenizeAsync(request, Options(null, cancellationToken)), cancellationToken);

    public Task<DetokenizeResponse> DetokenizeAsync(DetokenizeRequest request, CancellationToken cancellationToken = default) =>
        RunAsync(_inference.DetokenizeAsync(request, Options(null, cancellationToken)), cancellationToken);

    public Task<ListModelsResponse> ListModelsAsync(CancellationToken cancellationToken = default) =>
        RunAsync(_inference.ListModelsAsync(new ListModelsRequest(), Options(null, cancellationToken)), cancellationToken);

    public Task<ModelInfo> GetModelInfoAsync(string model, CancellationToken cancellationToken = default) =>
        RunAsync(_inference.GetModelInfoAsync(new GetModelInfoRequest { Model = model }, Options(null, cancellationToken)), cancellationToken);

    /// <summary>grpc.health.v1.Health/Check: the whole server ("") or one service.</summary>
    public Task<HealthCheckResponse> CheckHealthAsync(string service = "", CancellationToken cancellationToken = default) =>
        RunAsync(_health.CheckAsync(new HealthCheckRequest { Service = service }, Options(null, cancellationToken)), cancellationToken);

    /// <summary>Any method that takes one message and answers one, by its path ("/package.Service/Method").</summary>
    public Task<TResponse> UnaryAsync<TResponse>(string method, IMessage request, MessageParser<TResponse> parser, TimeSpan? deadline,
        CancellationToken cancellationToken)
        where TResponse : class, IMessage<TResponse> =>
        RunAsync(_channel.CreateCallInvoker().AsyncUnaryCall(Describe(MethodType.Unary, method, parser), null, Options(deadline, cancellationToken), request), cancellationToken);

    /// <summary>Any method that takes one message and answers a stream, by its path ("/package.Service/Method").</summary>
    public IAsyncEnumerable<TResponse> StreamAsync<TResponse>(string method, IMessage request, MessageParser<TResponse> parser, TimeSpan? deadline,
        CancellationToken cancellationToken = default)
        where TResponse : class, IMessage<TResponse> =>
        ReadAllAsync(() => _channel.CreateCallInvoker().AsyncServerStreamingCall(Describe(MethodType.ServerStreaming, method, parser), null,
            Options(deadline, cancellationToken), request), cancellationToken);

    private CallOptions Options(TimeSpan? deadline, CancellationToken cancellationToken) =>
        new(_headers, deadline is { } d ? DateTime.UtcNow + d : null, cancellationToken);

    private static Method<IMessage, TResponse> Describe<TResponse>(MethodType type, string path, MessageParser<TResponse> parser)
        where TResponse : class, IMessage<TResponse>
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(parser);
        var parts = path.Split('/');
        if (parts is not ["", { Length: > 0 } service, { Length: > 0 } name])
            throw new ArgumentException($"'{path}' is not a method path (/package.Service/Method)", nameof(path));
        return new Method<IMessage, TResponse>(type, service, name,
            Marshallers.Create<IMessage>(m => m.ToByteArray(), _ => throw new NotSupportedException("requests are only sent")),
            Marshallers.Create(r => r.ToByteArray(), parser.ParseFrom));
    }

    private static async Task<T> RunAsync<T>(AsyncUnaryCall<T> call, CancellationToken cancellationToken)
    {
        using (call)
        {
            try
            {
                return await call.ResponseAsync.ConfigureAwait(false);
            }
            catch (RpcException e)
            {
                throw Failed(e, cancellationToken);
            }
        }
    }

    // Leaving the enumeration early disposes the call, which resets the stream.
    private static async IAsyncEnumerable<T> ReadAllAsync<T>(Func<AsyncServerStreamingCall<T>> start, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        using var call = start();
        while (true)
        {
            bool more;
            try
            {
                more = await call.ResponseStream.MoveNext(cancellationToken).ConfigureAwait(false);
            }
            catch (RpcException e)
            {
                throw Failed(e, cancellationToken);
            }
            if (!more)
                yield break;
            yield return call.ResponseStream.Current;
        }
    }

    // The caller's own cancellation is an OperationCanceledException, as everywhere in .NET; a deadline is DEADLINE_EXCEEDED.
    private static Exception Failed(RpcException e, CancellationToken cancellationToken) =>
        e.StatusCode == StatusCode.Cancelled && cancellationToken.IsCancellationRequested
            ? new OperationCanceledException("the call was cancelled", e, cancellationToken)
            : new GrpcCallException((int)e.StatusCode, e.Status.Detail, e);

    public void Dispose() => _channel.Dispose();
}
