using System.Buffers.Binary;
using System.Net;
using System.Net.Http.Headers;
using Google.Protobuf;

namespace InferenceServer.Server.Tests;

/// <summary>gRPC calls made by hand, for what the client library never sends: broken frames, odd headers.</summary>
internal static class GrpcRaw
{
    public sealed record Result(GrpcStatus Status, string Message, HttpResponseHeaders Headers);

    public static HttpClient CreateClient() =>
        new() { DefaultRequestVersion = HttpVersion.Version20, DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact };

    public static async Task<Result> CallAsync(HttpClient http, Uri address, byte[] body, string method = "/inference.v1.Inference/Generate",
        IReadOnlyDictionary<string, string>? headers = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(address, method))
        {
            Content = new ByteArrayContent(body),
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
        };
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/grpc");
        request.Headers.TE.Add(new TransferCodingWithQualityHeaderValue("trailers"));
        foreach (var (name, value) in headers ?? new Dictionary<string, string>())
            request.Headers.TryAddWithoutValidation(name, value);
        using var response = await http.SendAsync(request);
        await response.Content.ReadAsByteArrayAsync();
        var status = response.Headers.TryGetValues("grpc-status", out var values) || response.TrailingHeaders.TryGetValues("grpc-status", out values)
            ? int.Parse(values.First(), System.Globalization.CultureInfo.InvariantCulture)
            : -1;
        var message = response.Headers.TryGetValues("grpc-message", out var messages) || response.TrailingHeaders.TryGetValues("grpc-message", out messages)
            ? Uri.UnescapeDataString(messages.First())
            : "";
        return new Result((GrpcStatus)status, message, response.Headers);
    }

    public static byte[] Frame(IMessage message) => Frame(message.ToByteArray());

    public static byte[] Frame(byte[] payload)
    {
        var bytes = new byte[5 + payload.Length];
        BinaryPrimitives.WriteUInt32BigEndian(bytes.AsSpan(1), (uint)payload.Length);
        payload.CopyTo(bytes.AsSpan(5));
        return bytes;
    }
}
