using System.Buffers.Binary;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Runtime.CompilerServices;
using Google.Protobuf;
using InferenceServer.Protocol;
using InferenceServer.Protocol.Health;

namespace InferenceServer.Client;

/// <summary>A call that ended with a gRPC status other than OK.</summary>
public sealed class GrpcCallException(int status, string message) : Exception($"gRPC status {status}: {message}")
{
    public int Status { get; } = status;
    public string StatusMessage { get; } = message;
}

/// <summary>
/// Calls the inference.v1.Inference service (and grpc.health.v1.Health) over HTTP/2 with
/// HttpClient: plaintext h2c for http:// addresses, TLS for https://.
/// </summary>
public sealed class InferenceClient : IDisposable
{
    private readonly HttpClient _http;
    private readonly string? _apiKey;

    public InferenceClient(Uri address, string? apiKey = null, HttpMessageHandler? handler = null)
    {
        _http = new HttpClient(handler ?? new SocketsHttpHandler { EnableMultipleHttp2Connections = true })
        {
            BaseAddress = address,
            DefaultRequestVersion = HttpVersion.Version20,
            DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Timeout = Timeout.InfiniteTimeSpan,
        };
        _apiKey = apiKey;
    }

    public Task<GenerateResponse> GenerateAsync(GenerateRequest request, TimeSpan? deadline = null, CancellationToken cancellationToken = default) =>
        UnaryAsync("/inference.v1.Inference/Generate", request, GenerateResponse.Parser, deadline, cancellationToken);

    public IAsyncEnumerable<GenerateResponse> GenerateStreamAsync(GenerateRequest request, TimeSpan? deadline = null, CancellationToken cancellationToken = default) =>
        StreamAsync("/inference.v1.Inference/GenerateStream", request, GenerateResponse.Parser, deadline, cancellationToken);

    public Task<TokenizeResponse> TokenizeAsync(TokenizeRequest request, CancellationToken cancellationToken = default) =>
        UnaryAsync("/inference.v1.Inference/Tokenize", request, TokenizeResponse.Parser, null, cancellationToken);

    public Task<DetokenizeResponse> DetokenizeAsync(DetokenizeRequest request, CancellationToken cancellationToken = default) =>
        UnaryAsync("/inference.v1.Inference/Detokenize", request, DetokenizeResponse.Parser, null, cancellationToken);

    public Task<ListModelsResponse> ListModelsAsync(CancellationToken cancellationToken = default) =>
        UnaryAsync("/inference.v1.Inference/ListModels", new ListModelsRequest(), ListModelsResponse.Parser, null, cancellationToken);

    public Task<ModelInfo> GetModelInfoAsync(string model, CancellationToken cancellationToken = default) =>
        UnaryAsync("/inference.v1.Inference/GetModelInfo", new GetModelInfoRequest { Model = model }, ModelInfo.Parser, null, cancellationToken);

    public Task<HealthCheckResponse> CheckHealthAsync(string service = "", CancellationToken cancellationToken = default) =>
        UnaryAsync("/grpc.health.v1.Health/Check", new HealthCheckRequest { Service = service }, HealthCheckResponse.Parser, null, cancellationToken);

    public async Task<TResponse> UnaryAsync<TResponse>(string method, IMessage request, MessageParser<TResponse> parser, TimeSpan? deadline, CancellationToken cancellationToken)
        where TResponse : class, IMessage<TResponse>
    {
        TResponse? result = null;
        await foreach (var message in StreamAsync(method, request, parser, deadline, cancellationToken).ConfigureAwait(false))
            result ??= message;
        return result ?? throw new GrpcCallException(13, "the server sent no response message");
    }

    /// <summary>A server-streaming call; stopping the enumeration early resets the stream, which cancels the call.</summary>
    public async IAsyncEnumerable<TResponse> StreamAsync<TResponse>(string method, IMessage request, MessageParser<TResponse> parser, TimeSpan? deadline,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
        where TResponse : class, IMessage<TResponse>
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(parser);
        // h2c by prior knowledge: the request itself must say HTTP/2 exactly (the client defaults apply to its helpers only).
        using var message = new HttpRequestMessage(HttpMethod.Post, method)
        {
            Content = Frame(request),
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
        };
        message.Headers.TE.Add(new TransferCodingWithQualityHeaderValue("trailers"));
        if (_apiKey is not null)
            message.Headers.Authorization = new AuthenticationHeaderValue("Bearer", _apiKey);
        if (deadline is { } d)
            message.Headers.Add("grpc-timeout", ((long)Math.Ceiling(d.TotalMilliseconds)).ToString(CultureInfo.InvariantCulture) + "m");
        using var response = await _http.SendAsync(message, HttpCompletionOption.ResponseHeadersRead, cancellationToken).ConfigureAwait(false);
        if (response.StatusCode != HttpStatusCode.OK)
            throw new GrpcCallException(14, $"HTTP {(int)response.StatusCode} from the server");
        // Trailers-only: the call failed before any message.
        ThrowIfFailed(response.Headers);
        var body = await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
        var header = new byte[5];
        while (await ReadFullyAsync(body, header, cancellationToken).ConfigureAwait(false))
        {
            var length = (int)BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(1));
            var payload = new byte[length];
            if (length > 0 && !await ReadFullyAsync(body, payload, cancellationToken).ConfigureAwait(false))
                throw new GrpcCallException(13, "the response ended inside a message");
            yield return parser.ParseFrom(payload);
        }
        ThrowIfFailed(response.TrailingHeaders);
        if (!response.TrailingHeaders.Contains("grpc-status") && !response.Headers.Contains("grpc-status"))
            throw new GrpcCallException(13, "the response ended without a grpc-status");
    }

    private static async Task<bool> ReadFullyAsync(Stream stream, byte[] buffer, CancellationToken cancellationToken)
    {
        var read = 0;
        while (read < buffer.Length)
        {
            var n = await stream.ReadAsync(buffer.AsMemory(read), cancellationToken).ConfigureAwait(false);
            if (n == 0)
                return read == 0 ? false : throw new GrpcCallException(13, "the response ended inside a message frame");
            read += n;
        }
        return true;
    }

    private static void ThrowIfFailed(HttpHeaders headers)
    {
        if (!headers.TryGetValues("grpc-status", out var values))
            return;
        var status = int.Parse(values.First(), CultureInfo.InvariantCulture);
        if (status == 0)
            return;
        var text = headers.TryGetValues("grpc-message", out var messages) ? Uri.UnescapeDataString(messages.First()) : "";
        throw new GrpcCallException(status, text);
    }

    private static ByteArrayContent Frame(IMessage message)
    {
        var size = message.CalculateSize();
        var bytes = new byte[5 + size];
        BinaryPrimitives.WriteUInt32BigEndian(bytes.AsSpan(1), (uint)size);
        message.WriteTo(bytes.AsSpan(5));
        var content = new ByteArrayContent(bytes);
        content.Headers.ContentType = new MediaTypeHeaderValue("application/grpc");
        return content;
    }

    public void Dispose() => _http.Dispose();
}
