using System.Net;
using System.Text;
using System.Text.Json;

namespace InferenceServer.Server.Tests;

/// <summary>
/// Graceful shutdown (what serve runs on SIGTERM) with requests in flight, on a slow stand-in model
/// (10 ms a step): a stream that can finish within the grace period finishes; one that cannot is cut
/// when it ends and its sequence is freed; new requests are refused meanwhile.
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class ShutdownTests(ServerFixture fixture)
{
    private static string Body(int maxTokens) =>
        $$"""{"prompt": "go", "max_tokens": {{maxTokens}}, "stream": true, "ignore_eos": true}""";

    [Fact]
    public async Task A_stream_in_flight_finishes_within_the_grace_period_and_new_requests_are_refused()
    {
        await using var server = await SlowServer.StartAsync(fixture, slots: 2, maxWaiting: 4);
        using var response = await StartStreamAsync(server, maxTokens: 40);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        Assert.StartsWith("data: {", await reader.ReadLineAsync(), StringComparison.Ordinal);

        var drain = server.DrainAsync(TimeSpan.FromSeconds(20));
        Assert.Equal(ServingState.Draining, server.State.State);
        // New work is refused while the stream goes on: a new connection cannot be opened, or gets 503.
        using (var other = new HttpClient { BaseAddress = server.Client.BaseAddress })
        {
            try
            {
                using var refused = await other.PostAsync("/v1/completions", HttpTest.Json(Body(1)));
                Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);
            }
            catch (HttpRequestException)
            {
            }
        }

        var rest = await reader.ReadToEndAsync();
        Assert.EndsWith("data: [DONE]\n\n", rest, StringComparison.Ordinal);
        Assert.Contains("\"finish_reason\":\"length\"", rest, StringComparison.Ordinal);
        await drain;
        await server.AssertIdleAsync();
    }

    [Fact]
    public async Task A_stream_longer_than_the_grace_period_is_cut_and_freed()
    {
        await using var server = await SlowServer.StartAsync(fixture, slots: 2, maxWaiting: 4);
        using var response = await StartStreamAsync(server, maxTokens: 400); // about four seconds
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        Assert.StartsWith("data: {", await reader.ReadLineAsync(), StringComparison.Ordinal);

        await server.DrainAsync(TimeSpan.FromMilliseconds(300));
        var received = new StringBuilder();
        try
        {
            received.Append(await reader.ReadToEndAsync());
        }
        catch (IOException)
        {
            // The connection was closed under the stream: what a client sees when the grace period ends.
        }
        Assert.DoesNotContain("[DONE]", received.ToString(), StringComparison.Ordinal);
        await server.AssertIdleAsync();
        Assert.InRange(server.Decoder.Steps, 1, 300);
    }

    private static async Task<HttpResponseMessage> StartStreamAsync(SlowServer server, int maxTokens)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = HttpTest.Json(Body(maxTokens)) };
        var response = await server.Client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return response;
    }
}
