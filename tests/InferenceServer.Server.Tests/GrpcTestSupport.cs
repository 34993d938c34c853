using System.Buffers.Binary;
using System.Net;
using System.Net.Http.Headers;
using Google.Protobuf;

namespace InferenceServer.Server.Tests;

/// <summary>
/// How a raw gRPC call ended: grpc-status (headers or trailers), its message (percent-decoded), the
/// HTTP status and the response headers.
/// </summary>
internal sealed record RawGrpcResult(HttpStatusCode HttpStatus, GrpcStatus? Status, string? Message, HttpResponseHeaders Headers);

/// <summary>gRPC calls built by hand over HttpClient's HTTP/2, for bodies and headers a real client would never send.</summary>
internal static class GrpcRaw
{
    public const string GenerateMethod = "/inference.v1.Inference/Generate";

    /// <summary>An HttpClient that speaks HTTP/2 without TLS (h2c), as the gRPC port wants.</summary>
    public static HttpClient CreateClient() =>
        new() { DefaultRequestVersion = HttpVersion.Version20, DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact };

    /// <summary>One length-prefixed message frame.</summary>
    public static byte[] Frame(IMessage message) => Frame(message.ToByteArray());

    /// <summary>One uncompressed frame around already serialized bytes.</summary>
    public static byte[] Frame(byte[] payload)
    {
        var bytes = new byte[5 + payload.Length];
        BinaryPrimitives.WriteUInt32BigEndian(bytes.AsSpan(1), (uint)payload.Length);
        payload.CopyTo(bytes.AsSpan(5));
        return bytes;
    }

    /// <summary>POSTs <paramref name="body"/> as a call to <paramref name="method"/> and reads the whole answer.</summary>
    public static async Task<RawGrpcResult> CallAsync(HttpClient http, Uri server, byte[] body, string method = GenerateMethod,
        string? encoding = null, string? timeout = null, string? contentType = "application/grpc",
        IReadOnlyDictionary<string, string>? headers = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(server, method))
        {
            Content = new ByteArrayContent(body),
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
        };
        if (contentType is not null)
            request.Content.Headers.ContentType = MediaTypeHeaderValue.Parse(contentType);
        request.Headers.TE.Add(new TransferCodingWithQualityHeaderValue("trailers"));
        if (encoding is not null)
            request.Headers.Add("grpc-encoding", encoding);
        if (timeout is not null)
            request.Headers.TryAddWithoutValidation("grpc-timeout", timeout);
        foreach (var (name, value) in headers ?? new Dictionary<string, string>())
            request.Headers.TryAddWithoutValidation(name, value);
        using var response = await http.SendAsync(request);
        await response.Content.ReadAsByteArrayAsync();
        GrpcStatus? status = Header(response, "grpc-status") is { } text ? (GrpcStatus)int.Parse(text, System.Globalization.CultureInfo.InvariantCulture) : null;
        var message = Header(response, "grpc-message") is { } escaped ? Uri.UnescapeDataString(escaped) : null;
        return new RawGrpcResult(response.StatusCode, status, message, response.Headers);
    }

    private static string? Header(HttpResponseMessage response, string name) =>
        response.Headers.TryGetValues(name, out var values) || response.TrailingHeaders.TryGetValues(name, out values) ? values.First() : null;
}
