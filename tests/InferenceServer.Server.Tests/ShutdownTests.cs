using System.Net;
using System.Text.Json;
using InferenceServer.Client;
using InferenceServer.Protocol;
using Grpc.Health.V1;

namespace InferenceServer.Server.Tests;

/// <summary>
/// Graceful shutdown (what serve runs on SIGTERM) with requests in flight, on a slow stand-in model
/// (10 ms a step). While draining, the ports keep listening: health says draining and new calls get
/// 503 / UNAVAILABLE. A call that finishes within the grace period finishes; one that does not is
/// ended by the server with an answer (503, an SSE error event and [DONE], UNAVAILABLE), not a reset,
/// and its sequence is freed.
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class ShutdownTests(ServerFixture fixture)
{
    private static string Body(int maxTokens, bool stream) =>
        $$"""{"prompt": "go", "max_tokens": {{maxTokens}}, "stream": {{(stream ? "true" : "false")}}, "ignore_eos": true}""";

    [Fact]
    public async Task While_draining_the_ports_listen_and_refuse_new_calls_and_a_stream_in_flight_finishes()
    {
        await using var server = await SlowServer.StartAsync(fixture, slots: 2, maxWaiting: 4);
        using var response = await StartStreamAsync(server, maxTokens: 60);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        Assert.StartsWith("data: {", await reader.ReadLineAsync(), StringComparison.Ordinal);

        var drain = server.DrainAsync(TimeSpan.FromSeconds(20));
        Assert.Equal(ServingState.Draining, server.State.State);
        // New connections are accepted and answered while the stream goes on.
        using (var other = new HttpClient { BaseAddress = server.Client.BaseAddress })
        {
            using var health = await other.GetAsync(new Uri("/health", UriKind.Relative));
            Assert.Equal(HttpStatusCode.ServiceUnavailable, health.StatusCode);
            Assert.Equal("draining", (await HttpTest.ReadJsonAsync(health)).GetProperty("status").GetString());
            using var refused = await other.PostAsync(new Uri("/v1/completions", UriKind.Relative), HttpTest.Json(Body(1, stream: false)));
            await HttpTest.AssertErrorAsync(refused, HttpStatusCode.ServiceUnavailable, "service_unavailable");
        }
        using (var grpc = new InferenceClient(server.GrpcAddress))
        {
            Assert.Equal(HealthCheckResponse.Types.ServingStatus.NotServing, (await grpc.CheckHealthAsync()).Status);
            var refused = await Assert.ThrowsAsync<GrpcCallException>(() => grpc.GenerateAsync(new GenerateRequest { Prompt = "go", MaxTokens = 1 }));
            Assert.Equal((int)GrpcStatus.Unavailable, refused.Status);
        }

        var rest = await reader.ReadToEndAsync();
        Assert.EndsWith("data: [DONE]\n\n", rest, StringComparison.Ordinal);
        Assert.Contains("\"finish_reason\":\"length\"", rest, StringComparison.Ordinal);
        await drain;
        await server.AssertIdleAsync();
    }

    [Fact]
    public async Task Calls_longer_than_the_grace_period_are_ended_by_the_server_with_an_answer()
    {
        await using var server = await SlowServer.StartAsync(fixture, slots: 4, maxWaiting: 4);
        // About four seconds each, far past the grace period.
        using var stream = await StartStreamAsync(server, maxTokens: 400);
        using var reader = new StreamReader(await stream.Content.ReadAsStreamAsync());
        Assert.StartsWith("data: {", await reader.ReadLineAsync(), StringComparison.Ordinal);
        var whole = server.Client.PostAsync(new Uri("/v1/completions", UriKind.Relative), HttpTest.Json(Body(400, stream: false)));
        using var grpc = new InferenceClient(server.GrpcAddress);
        var grpcDeltas = 0;
        var grpcStream = Task.Run(async () =>
        {
            await foreach (var _ in grpc.GenerateStreamAsync(new GenerateRequest { Prompt = "go", MaxTokens = 400 }))
                grpcDeltas++;
        });
        using var watcher = new InferenceClient(server.GrpcAddress);
        var watched = new System.Collections.Concurrent.ConcurrentQueue<HealthCheckResponse.Types.ServingStatus>();
        var watching = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var watch = Task.Run(async () =>
        {
            await foreach (var update in watcher.StreamAsync("/grpc.health.v1.Health/Watch", new HealthCheckRequest(), HealthCheckResponse.Parser, null))
            {
                watched.Enqueue(update.Status);
                watching.TrySetResult();
            }
        });
        await server.WaitForAsync(running: 3, waiting: 0);
        await watching.Task.WaitAsync(TimeSpan.FromSeconds(10));

        await server.DrainAsync(TimeSpan.FromMilliseconds(300));

        // The stream: an error event, then [DONE], then a clean end of the response.
        var rest = await reader.ReadToEndAsync();
        var events = rest.Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("data: [DONE]", events[^1]);
        using (var error = JsonDocument.Parse(events[^2]["data: ".Length..]))
            Assert.Equal("service_unavailable", error.RootElement.GetProperty("error").GetProperty("code").GetString());
        Assert.DoesNotContain("finish_reason\":\"length", rest, StringComparison.Ordinal);

        // The whole completion: 503 with an OpenAI error body.
        using (var response = await whole)
            await HttpTest.AssertErrorAsync(response, HttpStatusCode.ServiceUnavailable, "service_unavailable");

        // gRPC: UNAVAILABLE in the trailers, after the deltas already sent; the health watch saw NOT_SERVING, then ended the same way.
        var cut = await Assert.ThrowsAsync<GrpcCallException>(() => grpcStream);
        Assert.Equal((int)GrpcStatus.Unavailable, cut.Status);
        Assert.True(grpcDeltas > 0);
        var watchEnded = await Assert.ThrowsAsync<GrpcCallException>(() => watch);
        Assert.Equal((int)GrpcStatus.Unavailable, watchEnded.Status);
        Assert.Equal([HealthCheckResponse.Types.ServingStatus.Serving, HealthCheckResponse.Types.ServingStatus.NotServing], watched.ToArray());

        await server.AssertIdleAsync();
        Assert.InRange(server.Decoder.Steps, 1, 600);
    }

    private static async Task<HttpResponseMessage> StartStreamAsync(SlowServer server, int maxTokens)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = HttpTest.Json(Body(maxTokens, stream: true)) };
        var response = await server.Client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return response;
    }
}
