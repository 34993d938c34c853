using System.Net;
using System.Text.Json;
using InferenceServer.Client;
using InferenceServer.Engine;
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

        // The engine fails its requests before its loop ends, and the state turns when the loop has ended.
        await WaitForFaultedAsync(server.State);
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

    [Fact]
    public async Task A_failing_engine_stops_only_its_model_and_health_says_degraded_until_every_model_has_failed()
    {
        var (failing, failingDecoder) = SlowModel("failing");
        var (steady, steadyDecoder) = SlowModel("steady");
        await using var models = new ServedModels([failing, steady]);
        var state = new ServerState { State = ServingState.Serving };
        await using var server = await SecondServer.StartAsync(SecondServer.OptionsLike(fixture.Options), models, state);
        using var grpc = new InferenceClient(server.GrpcAddress);

        failingDecoder.FailingStep = failingDecoder.Steps + 1;
        using (var response = await server.Client.PostAsync("/v1/completions", HttpTest.Json("{\"model\": \"failing\", \"prompt\": \"abc\", \"max_tokens\": 4}")))
            await HttpTest.AssertErrorAsync(response, HttpStatusCode.InternalServerError, "internal_error");
        await failing.Engine.Stopped;

        // The failed model answers 503; the other one serves on, and health says which one failed.
        using (var response = await server.Client.PostAsync("/v1/completions", HttpTest.Json("{\"model\": \"failing\", \"prompt\": \"abc\", \"max_tokens\": 2}")))
            await HttpTest.AssertErrorAsync(response, HttpStatusCode.ServiceUnavailable, "service_unavailable");
        var served = await HttpTest.PostOkAsync(server.Client, "/v1/completions", "{\"model\": \"steady\", \"prompt\": \"abc\", \"max_tokens\": 2}");
        Assert.Equal("aa", served.GetProperty("choices")[0].GetProperty("text").GetString());
        Assert.Equal(ServingState.Serving, state.State);
        using (var health = await server.Client.GetAsync("/health"))
        {
            Assert.Equal(HttpStatusCode.OK, health.StatusCode);
            var body = await HttpTest.ReadJsonAsync(health);
            Assert.Equal("degraded", body.GetProperty("status").GetString());
            Assert.Equal(["failing"], body.GetProperty("faulted_models").EnumerateArray().Select(e => e.GetString()));
        }
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, (await grpc.CheckHealthAsync()).Status);

        // The last one fails too: nothing can be served.
        steadyDecoder.FailingStep = steadyDecoder.Steps + 1;
        using (var response = await server.Client.PostAsync("/v1/completions", HttpTest.Json("{\"model\": \"steady\", \"prompt\": \"abc\", \"max_tokens\": 4}")))
            await HttpTest.AssertErrorAsync(response, HttpStatusCode.InternalServerError, "internal_error");
        await steady.Engine.Stopped;
        await WaitForFaultedAsync(state);
        Assert.Equal(ServingState.Faulted, state.State);
        using (var health = await server.Client.GetAsync("/health"))
            Assert.Equal(HttpStatusCode.ServiceUnavailable, health.StatusCode);
        foreach (var model in models.Bases)
            await ServerFixture.AssertIdleAsync(model.Engine);
    }

    private static async Task WaitForFaultedAsync(ServerState state)
    {
        for (var i = 0; i < 300 && state.State != ServingState.Faulted; i++)
            await Task.Delay(10);
    }

    private (ServedModel Model, SlowDecoder Decoder) SlowModel(string name)
    {
        var decoder = new SlowDecoder(2, fixture.Model.ContextLength, ServerFixture.VocabSize, 'a', TimeSpan.FromMilliseconds(1));
        var engine = new InferenceEngine(decoder, fixture.Model.Tokenizer, new EngineOptions { EosTokenIds = [ServerFixture.EndOfText] });
        return (new ServedModel(name, fixture.Model.Folder, fixture.Model.Tokenizer, engine, 2), decoder);
    }
}
