using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using System.Text;

namespace InferenceServer.Server.Tests;

/// <summary>
/// HTTP/1.1 written byte by byte over a socket, for requests HttpClient refuses to send: bodies
/// shorter than their Content-Length, broken chunked encoding, bad header lines.
/// </summary>
internal static class RawHttp
{
    /// <summary>
    /// Sends <paramref name="request"/> as it is, optionally closes the sending side (the body ends
    /// there), and reads the answer until the server closes the connection. The answer comes back as
    /// an <see cref="HttpResponseMessage"/> (chunked bodies decoded), so the usual assertions apply.
    /// </summary>
    public static async Task<HttpResponseMessage> SendAsync(Uri server, byte[] request, bool closeSending, TimeSpan timeout) =>
        Parse(await ExchangeAsync(server, request, closeSending, timeout));

    /// <summary>The bytes that came back for <paramref name="request"/>, until the server closed the connection.</summary>
    public static async Task<byte[]> ExchangeAsync(Uri server, byte[] request, bool closeSending, TimeSpan timeout)
    {
        using var cancel = new CancellationTokenSource(timeout);
        using var client = new TcpClient();
        await client.ConnectAsync(server.Host, server.Port, cancel.Token);
        var stream = client.GetStream();
        try
        {
            await stream.WriteAsync(request, cancel.Token);
        }
        catch (IOException)
        {
            // The server may answer and close before it has read everything (e.g. a Content-Length over the limit).
        }
        if (closeSending)
            client.Client.Shutdown(SocketShutdown.Send);
        var received = new MemoryStream();
        try
        {
            await stream.CopyToAsync(received, cancel.Token);
        }
        catch (IOException)
        {
            // A reset after the answer: what arrived is enough.
        }
        return received.ToArray();
    }

    /// <summary>Status line, headers and body of one HTTP/1.1 response.</summary>
    public static HttpResponseMessage Parse(byte[] bytes)
    {
        var text = Encoding.Latin1.GetString(bytes);
        var end = text.IndexOf("\r\n\r\n", StringComparison.Ordinal);
        Assert.True(end > 0, $"no complete HTTP response came back: '{text}'");
        var lines = text[..end].Split("\r\n");
        var status = lines[0].Split(' ');
        var response = new HttpResponseMessage((HttpStatusCode)int.Parse(status[1], System.Globalization.CultureInfo.InvariantCulture));
        var headers = lines.Skip(1).Select(l => (Name: l[..l.IndexOf(':', StringComparison.Ordinal)], Value: l[(l.IndexOf(':', StringComparison.Ordinal) + 1)..].Trim())).ToList();
        var body = bytes.AsSpan(end + 4).ToArray();
        if (headers.Any(h => h.Name.Equals("Transfer-Encoding", StringComparison.OrdinalIgnoreCase) && h.Value.Contains("chunked", StringComparison.OrdinalIgnoreCase)))
            body = Dechunk(body);
        response.Content = new ByteArrayContent(body);
        foreach (var (name, value) in headers)
        {
            if (name.Equals("Content-Type", StringComparison.OrdinalIgnoreCase))
                response.Content.Headers.ContentType = MediaTypeHeaderValue.Parse(value);
        }
        return response;
    }

    private static byte[] Dechunk(byte[] body)
    {
        var output = new MemoryStream();
        var position = 0;
        while (position < body.Length)
        {
            var lineEnd = Array.IndexOf(body, (byte)'\n', position);
            if (lineEnd < 0)
                break;
            var size = Convert.ToInt32(Encoding.ASCII.GetString(body, position, lineEnd - position).Trim().Split(';')[0], 16);
            if (size == 0)
                break;
            output.Write(body, lineEnd + 1, Math.Min(size, body.Length - lineEnd - 1));
            position = lineEnd + 1 + size + 2;
        }
        return output.ToArray();
    }
}
