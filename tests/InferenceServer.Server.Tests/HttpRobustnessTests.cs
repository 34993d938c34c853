using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Http;

namespace InferenceServer.Server.Tests;

/// <summary>
/// What a hostile or broken HTTP client sends: text that is not Unicode, bodies that are cut short,
/// badly chunked or never finished. Each gets a 4xx error body, never a 500, and nothing is logged as
/// an error; every response carries a request id.
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class HttpRobustnessTests(ServerFixture fixture) : IDisposable
{
    private readonly HttpClient _client = new() { BaseAddress = fixture.HttpAddress };

    public void Dispose() => _client.Dispose();

    public static TheoryData<string, string, string> NotUnicode => new()
    {
        // path, body ("BAD" becomes the bytes FF FE, which are not UTF-8), the field the error names
        { "/v1/completions", """{"prompt": "\ud800"}""", "prompt" },
        { "/v1/completions", """{"prompt": ["a\udfffb"]}""", "prompt" },
        { "/v1/completions", """{"prompt": "aBAD"}""", "prompt" },
        { "/v1/completions", """{"prompt": "a", "stop": "\ud800"}""", "stop" },
        { "/v1/completions", """{"prompt": "a", "stop": ["x", "BAD"]}""", "stop" },
        { "/v1/completions", """{"prompt": "a", "suffix": "\ud800"}""", "suffix" },
        { "/infill", """{"input_prefix": "a", "stop": ["\udc00"]}""", "stop" },
        { "/infill", """{"input_prefix": "\ud800", "input_suffix": "b"}""", "input_prefix" },
        { "/infill", """{"input_prefix": "a", "prompt": "BAD"}""", "prompt" },
    };

    [Theory]
    [MemberData(nameof(NotUnicode))]
    public async Task Text_that_is_not_unicode_is_a_400_naming_the_field(string path, string body, string field)
    {
        var bytes = Encoding.UTF8.GetBytes(body.Replace("BAD", "\u0001", StringComparison.Ordinal));
        bytes = [.. bytes.SelectMany(b => b == 1 ? new byte[] { 0xFF, 0xFE } : [b])];
        using var content = new ByteArrayContent(bytes);
        content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/json");
        using var response = await _client.PostAsync(path, content);
        var error = await HttpTest.AssertErrorAsync(response, HttpStatusCode.BadRequest, param: field);
        Assert.Equal("invalid_request_error", error.GetProperty("type").GetString());
        await fixture.AssertEngineIdleAsync();
    }

    [Fact]
    public async Task Broken_bodies_get_400_or_408_and_are_not_logged_as_errors()
    {
        var logs = new LogCapture();
        // A small body limit too: the bodies here fit it.
        await using var server = await SecondServer.StartAsync(SecondServer.OptionsLike(fixture.Options) with { MaxRequestBodyBytes = 200 }, fixture.Model,
            new ServerState { State = ServingState.Serving }, logs: logs);
        var port = server.Options.HttpPort;
        const string head = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n";

        var badChunk = await RawAsync(port, head + "Transfer-Encoding: chunked\r\n\r\nzz\r\n{\"prompt\"\r\n0\r\n\r\n");
        Assert.StartsWith("HTTP/1.1 400 ", badChunk, StringComparison.Ordinal);
        Assert.Contains("\"code\":\"invalid_body\"", badChunk, StringComparison.Ordinal);
        Assert.Contains("x-request-id: req-", badChunk, StringComparison.Ordinal);

        // Fewer bytes than the Content-Length, then the client goes away: nothing to answer, nothing to log.
        await RawAsync(port, head + "Content-Length: 100\r\n\r\n{\"prompt\":", closeAfterSending: true);

        // Fewer bytes, and the client waits: Kestrel's minimum data rate (after its 5 s grace) ends the wait.
        var stalled = await RawAsync(port, head + "Content-Length: 100\r\n\r\n{\"prompt\":");
        Assert.StartsWith("HTTP/1.1 408 ", stalled, StringComparison.Ordinal);
        Assert.Contains("\"code\":\"request_timeout\"", stalled, StringComparison.Ordinal);

        using (var ok = await server.Client.PostAsync("/v1/completions", HttpTest.Json("""{"prompt": "ok", "max_tokens": 2}""")))
            Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        Assert.DoesNotContain(logs.Entries, e => e.Level >= Microsoft.Extensions.Logging.LogLevel.Error);
        await fixture.AssertEngineIdleAsync();
    }

    [Fact]
    public async Task Every_response_carries_a_request_id_and_keeps_a_sane_one_from_the_client()
    {
        using (var ok = await _client.GetAsync("/v1/models"))
            Assert.Matches("^req-[0-9a-f]{32}$", ok.Headers.GetValues("x-request-id").Single());
        using (var missing = await _client.GetAsync("/nowhere"))
            Assert.StartsWith("req-", missing.Headers.GetValues("x-request-id").Single(), StringComparison.Ordinal);
        using (var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = HttpTest.Json("""{"prompt": "a", "n": 2}""") })
        {
            request.Headers.Add("x-request-id", "client-7f3a");
            using var refused = await _client.SendAsync(request);
            Assert.Equal(HttpStatusCode.BadRequest, refused.StatusCode);
            Assert.Equal("client-7f3a", refused.Headers.GetValues("x-request-id").Single());
        }
        using (var request = new HttpRequestMessage(HttpMethod.Get, "/v1/models"))
        {
            request.Headers.TryAddWithoutValidation("x-request-id", new string('a', 200));
            using var response = await _client.SendAsync(request);
            Assert.StartsWith("req-", response.Headers.GetValues("x-request-id").Single(), StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task An_unexpected_failure_is_a_500_naming_the_request_id_and_nothing_of_its_cause()
    {
        var logs = new LogCapture();
        var guard = new Http.Guard(logs.CreateLogger("test"), new ServerState());
        var context = new DefaultHttpContext();
        context.Features.Set(new RequestRecord("req-abc"));
        context.Response.Body = new MemoryStream();
        await guard.Wrap(_ => throw new InvalidOperationException("secret: the database password is hunter2"))(context);

        Assert.Equal(500, context.Response.StatusCode);
        context.Response.Body.Position = 0;
        var body = await new StreamReader(context.Response.Body).ReadToEndAsync();
        Assert.DoesNotContain("secret", body, StringComparison.Ordinal);
        using var json = JsonDocument.Parse(body);
        var error = json.RootElement.GetProperty("error");
        Assert.Equal("internal error (request id req-abc)", error.GetProperty("message").GetString());
        Assert.Equal("server_error", error.GetProperty("type").GetString());
        var entry = Assert.Single(logs.Entries);
        Assert.Contains("req-abc", entry.Message, StringComparison.Ordinal);
        Assert.Equal("secret: the database password is hunter2", entry.Exception?.Message);
    }

    /// <summary>Sends raw bytes and returns what comes back until the server closes or 15 s pass.</summary>
    private static async Task<string> RawAsync(int port, string request, bool closeAfterSending = false)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(IPAddress.Loopback, port);
        await socket.SendAsync(Encoding.ASCII.GetBytes(request));
        if (closeAfterSending)
        {
            socket.Shutdown(SocketShutdown.Send);
        }
        var received = new StringBuilder();
        var buffer = new byte[4096];
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        try
        {
            int n;
            while ((n = await socket.ReceiveAsync(buffer, timeout.Token)) > 0)
            {
                received.Append(Encoding.ASCII.GetString(buffer, 0, n));
                // One answer is all these requests get: stop at the end of a chunked body.
                if (received.ToString().EndsWith("\r\n0\r\n\r\n", StringComparison.Ordinal))
                    break;
            }
        }
        catch (Exception e) when (e is SocketException or OperationCanceledException)
        {
        }
        return received.ToString();
    }
}
