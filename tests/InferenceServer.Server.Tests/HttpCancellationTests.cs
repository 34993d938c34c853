using System.Net;
using System.Net.Sockets;
using System.Text;

namespace InferenceServer.Server.Tests;

/// <summary>
/// A client that goes away mid-generation (or while waiting) frees its sequence at once, and a full
/// queue answers 429. These run on a second server over a slow stand-in model, so that a generation
/// is still going when the client leaves (the fixture's tiny model finishes hundreds of tokens in
/// a few dozen milliseconds).
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class HttpCancellationTests(ServerFixture fixture)
{
    private const int MaxTokens = 400; // about four seconds at 10 ms a step

    private static string Body(bool stream, int maxTokens = MaxTokens) =>
        $$"""{"model": "slow", "prompt": "go", "max_tokens": {{maxTokens}}, "stream": {{(stream ? "true" : "false")}}}""";

    [Fact]
    public async Task Disconnecting_mid_stream_frees_the_sequence()
    {
        await using var server = await SlowServer.StartAsync(fixture, slots: 2, maxWaiting: 8);
        // A raw connection, closed after the first event: HttpClient would rather drain the rest to reuse it.
        using (var tcp = new TcpClient())
        {
            await tcp.ConnectAsync(server.Client.BaseAddress!.Host, server.Client.BaseAddress.Port);
            var stream = tcp.GetStream();
            var body = Encoding.UTF8.GetBytes(Body(stream: true));
            var head = $"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {body.Length}\r\n\r\n";
            await stream.WriteAsync(Encoding.ASCII.GetBytes(head));
            await stream.WriteAsync(body);
            var received = new StringBuilder();
            var buffer = new byte[4096];
            while (!received.ToString().Contains("data: {", StringComparison.Ordinal))
            {
                var read = await stream.ReadAsync(buffer);
                Assert.True(read > 0, "the server closed the connection: " + received);
                received.Append(Encoding.UTF8.GetString(buffer, 0, read));
            }
            Assert.StartsWith("HTTP/1.1 200", received.ToString(), StringComparison.Ordinal);
            Assert.Contains("text/event-stream", received.ToString(), StringComparison.Ordinal);
        }
        await server.AssertIdleAsync();
        Assert.True(server.Decoder.Steps < MaxTokens / 2, $"the generation went on after the client left ({server.Decoder.Steps} steps)");
        await fixture.AssertEngineIdleAsync();
    }

    [Fact]
    public async Task Disconnecting_while_waiting_for_a_whole_completion_frees_the_sequence()
    {
        await using var server = await SlowServer.StartAsync(fixture, slots: 2, maxWaiting: 8);
        using var cancel = new CancellationTokenSource();
        var pending = server.Client.PostAsync("/v1/completions", HttpTest.Json(Body(stream: false)), cancel.Token);
        await server.WaitForAsync(running: 1, waiting: 0);
        await Task.Delay(50);
        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => pending);
        await server.AssertIdleAsync();
        Assert.True(server.Decoder.Steps < MaxTokens / 2, $"the generation went on after the client left ({server.Decoder.Steps} steps)");
    }

    [Fact]
    public async Task A_full_queue_is_429_and_queued_requests_that_leave_are_dropped()
    {
        // One slot, one waiting place: the first request runs, the second waits, the third is turned away.
        await using var server = await SlowServer.StartAsync(fixture, slots: 1, maxWaiting: 1);
        using var cancel = new CancellationTokenSource();
        var running = server.Client.PostAsync("/v1/completions", HttpTest.Json(Body(stream: false)), cancel.Token);
        await server.WaitForAsync(running: 1, waiting: 0);
        var waiting = server.Client.PostAsync("/v1/completions", HttpTest.Json(Body(stream: true)), cancel.Token);
        await server.WaitForAsync(running: 1, waiting: 1);

        using (var response = await server.Client.PostAsync("/v1/completions", HttpTest.Json(Body(stream: false, maxTokens: 1))))
        {
            var error = await HttpTest.AssertErrorAsync(response, HttpStatusCode.TooManyRequests, "rate_limit_exceeded");
            Assert.Equal("rate_limit_error", error.GetProperty("type").GetString());
        }
        using (var response = await server.Client.PostAsync("/infill", HttpTest.Json("{\"input_prefix\": \"a\", \"n_predict\": 1}")))
            await HttpTest.AssertErrorAsync(response, HttpStatusCode.TooManyRequests, "rate_limit_exceeded");

        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => running);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => waiting);
        await server.AssertIdleAsync();
        Assert.True(server.Decoder.Steps < MaxTokens / 2, $"the generations went on after the clients left ({server.Decoder.Steps} steps)");

        // And it serves again.
        using (var response = await server.Client.PostAsync("/v1/completions", HttpTest.Json(Body(stream: false, maxTokens: 3))))
        {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal("aaa", (await HttpTest.ReadJsonAsync(response)).GetProperty("choices")[0].GetProperty("text").GetString());
        }
        await server.AssertIdleAsync();
    }
}
