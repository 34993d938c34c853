using System.Net;
using System.Text.Json;
using InferenceServer.Client;
using InferenceServer.Protocol;
using Grpc.Health.V1;

namespace InferenceServer.Server.Tests;

/// <summary>A model step that throws: the requests it held fail as the server's fault, and the server says it cannot serve.</summary>
[Collection(ServerCollection.Name)]
public sealed class EngineFaultTests(ServerFixture fixture)
{
    [Fact]
    public async Task Requests_held_by_a_failing_engine_get_an_internal_error_and_health_turns_not_serving()
    {
        await using var server = await SlowServer.StartAsync(fixture, slots: 4, maxWaiting: 8);
        using var grpc = new InferenceClient(server.GrpcAddress);
        var http = server.Client.PostAsync("/v1/completions", HttpTest.Json("{\"prompt\": \"abc\", \"max_tokens\": 200}"));
        var streamed = server.Client.PostAsync("/v1/completions", HttpTest.Json("{\"prompt\": \"abd\", \"max_tokens\": 200, \"stream\": true}"));
        var call = Assert.ThrowsAsync<GrpcCallException>(() => grpc.GenerateAsync(new GenerateRequest { Prompt = "abe", MaxTokens = 200 }));
        // All three in the engine (200 steps of 10 ms each), then the device fails.
        await server.WaitForAsync(running: 3, waiting: 0);
        server.Decoder.FailingStep = server.Decoder.Steps + 2;

        using (var response = await http)
        {
            var error = await HttpTest.AssertErrorAsync(response, HttpStatusCode.InternalServerError, "internal_error");
            var id = Assert.Single(response.Headers.GetValues("x-request-id"));
            Assert.Equal($"internal error (request id {id})", error.GetProperty("message").GetString());
        }
        using (var response = await streamed)
        {
            // The stream had started: its error comes as an event, and the cause stays in the log.
            var events = await HttpTest.ReadEventsAsync(response);
            var error = events.Select(e => e == "[DONE]" ? default : JsonDocument.Parse(e).RootElement).Single(e => e.ValueKind == JsonValueKind.Object && e.TryGetProperty("error", out _));
            Assert.StartsWith("internal error (request id ", error.GetProperty("error").GetProperty("message").GetString(), StringComparison.Ordinal);
        }
        var failed = await call;
        Assert.Equal((int)GrpcStatus.Internal, failed.Status);
        Assert.DoesNotContain("secret", failed.Message, StringComparison.Ordinal);

        Assert.Equal(ServingState.Faulted, server.State.State);
        using (var health = await server.Client.GetAsync("/health"))
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, health.StatusCode);
            Assert.Equal("faulted", (await HttpTest.ReadJsonAsync(health)).GetProperty("status").GetString());
        }
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.NotServing, (await grpc.CheckHealthAsync()).Status);
        using (var refused = await server.Client.PostAsync("/v1/completions", HttpTest.Json("{\"prompt\": \"abc\", \"max_tokens\": 2}")))
            await HttpTest.AssertErrorAsync(refused, HttpStatusCode.ServiceUnavailable, "service_unavailable");
        var snapshot = server.Model.Engine.Snapshot;
        Assert.Equal((0, 0, 0), (snapshot.Running, snapshot.Waiting, snapshot.UsedBlocks));
    }
}
