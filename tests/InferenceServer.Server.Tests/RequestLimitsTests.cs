using System.Net;
using System.Text.Json;
using InferenceServer.Client;
using InferenceServer.Protocol;

namespace InferenceServer.Server.Tests;

/// <summary>
/// Numbers and lists that come from clients: the same limits on gRPC, /v1/completions and /infill,
/// arithmetic that cannot overflow, and nothing taken from the waiting queue by a refused request.
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class RequestLimitsTests(ServerFixture fixture) : IDisposable
{
    private readonly HttpClient _http = new() { BaseAddress = fixture.HttpAddress };
    private readonly InferenceClient _grpc = new(fixture.GrpcAddress);

    public void Dispose()
    {
        _http.Dispose();
        _grpc.Dispose();
    }

    private static string Stops(int count, int length = 1) =>
        JsonSerializer.Serialize(Enumerable.Range(0, count).Select(i => new string((char)('A' + (i % 26)), length)).ToArray());

    public static TheoryData<string, string, string> RefusedOnBothHttpEndpoints => new()
    {
        // name, the JSON fields, the field the error names
        { "more stop strings than allowed", $"\"stop\": {Stops(17)}", "stop" },
        { "a stop string over the byte limit", $"\"stop\": [\"{new string('x', 257)}\"]", "stop" },
        { "a stop string over the byte limit in UTF-8", $"\"stop\": [\"{new string('é', 129)}\"]", "stop" },
        { "priority above the server's maximum", "\"priority\": 1", "priority" },
        { "priority below the minimum", "\"priority\": -2147483648", "priority" },
    };

    [Theory]
    [MemberData(nameof(RefusedOnBothHttpEndpoints))]
    public async Task Completions_and_infill_refuse_the_same_requests(string name, string fields, string param)
    {
        using (var response = await _http.PostAsync("/v1/completions", HttpTest.Json($"{{\"prompt\": \"a\", \"max_tokens\": 2, {fields}}}")))
            await HttpTest.AssertErrorAsync(response, HttpStatusCode.BadRequest, param: param);
        using (var response = await _http.PostAsync("/infill", HttpTest.Json($"{{\"input_prefix\": \"a\", \"n_predict\": 2, {fields}}}")))
            await HttpTest.AssertErrorAsync(response, HttpStatusCode.BadRequest, param: param);
        await fixture.AssertEngineIdleAsync();
        Assert.NotEmpty(name);
    }

    [Theory]
    [InlineData("seven stop strings, as editor plugins send", 7, 1, 0)]
    [InlineData("the most stop strings allowed, each as long as allowed", 16, 255, 0)]
    [InlineData("a lower priority", 0, 1, -5)]
    public async Task Requests_within_the_limits_are_served_on_every_front_end(string name, int stopCount, int stopLength, int priority)
    {
        var stops = Stops(stopCount, stopLength);
        using (var response = await _http.PostAsync("/v1/completions",
            HttpTest.Json($"{{\"prompt\": \"a\", \"max_tokens\": 2, \"stop\": {stops}, \"priority\": {priority}}}")))
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        using (var response = await _http.PostAsync("/infill",
            HttpTest.Json($"{{\"input_prefix\": \"a\", \"n_predict\": 2, \"stop\": {stops}, \"priority\": {priority}}}")))
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var request = new GenerateRequest { Prompt = "a", MaxTokens = 2, Priority = priority };
        request.Stop.AddRange(JsonSerializer.Deserialize<string[]>(stops)!);
        var reply = await _grpc.GenerateAsync(request);
        Assert.NotEqual(FinishReason.Unspecified, reply.FinishReason);
        await fixture.AssertEngineIdleAsync();
        Assert.NotEmpty(name);
    }

    [Theory]
    [InlineData("more stop strings than allowed", 17, 1, 0)]
    [InlineData("a stop string over the byte limit", 1, 257, 0)]
    [InlineData("priority above the server's maximum", 0, 1, 1)]
    [InlineData("the lowest int32 priority", 0, 1, int.MinValue)]
    public async Task Grpc_refuses_what_http_refuses(string name, int stopCount, int stopLength, int priority)
    {
        var request = new GenerateRequest { Prompt = "a", MaxTokens = 2, Priority = priority };
        request.Stop.AddRange(JsonSerializer.Deserialize<string[]>(Stops(stopCount, stopLength))!);
        var e = await Assert.ThrowsAsync<GrpcCallException>(() => _grpc.GenerateAsync(request));
        Assert.Equal((int)GrpcStatus.InvalidArgument, e.Status);
        await fixture.AssertEngineIdleAsync();
        Assert.NotEmpty(name);
    }

    [Fact]
    public async Task Grpc_refuses_more_stop_token_ids_than_allowed()
    {
        var request = new GenerateRequest { Prompt = "a", MaxTokens = 2 };
        request.StopTokenIds.AddRange(Enumerable.Repeat(ServerFixture.EndOfText, RequestLimits.MaxStopTokenIds + 1));
        var e = await Assert.ThrowsAsync<GrpcCallException>(() => _grpc.GenerateAsync(request));
        Assert.Equal((int)GrpcStatus.InvalidArgument, e.Status);
        Assert.Contains("stop_token_ids", e.Message, StringComparison.Ordinal);
        await fixture.AssertEngineIdleAsync();
    }

    [Theory]
    [InlineData(int.MaxValue)]
    [InlineData(int.MaxValue - 1)]
    [InlineData(int.MaxValue - 600)] // with a 1,000-token prompt, once wrapped around to a negative total
    public async Task Max_tokens_beyond_the_context_is_refused_without_overflowing(int maxTokens)
    {
        var prompt = new string('a', 400);
        using (var response = await _http.PostAsync("/v1/completions", HttpTest.Json($"{{\"prompt\": \"{prompt}\", \"max_tokens\": {maxTokens}}}")))
        {
            var error = await HttpTest.AssertErrorAsync(response, HttpStatusCode.BadRequest);
            Assert.Contains("context length", error.GetProperty("message").GetString(), StringComparison.Ordinal);
        }
        var e = await Assert.ThrowsAsync<GrpcCallException>(() => _grpc.GenerateAsync(new GenerateRequest { Prompt = prompt, MaxTokens = maxTokens }));
        Assert.Equal((int)GrpcStatus.InvalidArgument, e.Status);
        await fixture.AssertEngineIdleAsync();
    }

    [Fact]
    public async Task Infill_takes_an_n_predict_beyond_the_context_as_until_the_end_of_the_context()
    {
        var json = await HttpTest.PostOkAsync(_http, "/infill",
            $"{{\"input_prefix\": \"def f(x):\", \"input_suffix\": \"\", \"n_predict\": {int.MaxValue}, \"temperature\": 0, \"ignore_eos\": true}}");
        // Generation ran until the context was full or the model ended the middle.
        Assert.True(json.GetProperty("stop_type").GetString() == "eos"
            || json.GetProperty("tokens_evaluated").GetInt32() + json.GetProperty("tokens_predicted").GetInt32() == fixture.Model.ContextLength,
            json.ToString());
        await fixture.AssertEngineIdleAsync();
    }

    [Fact]
    public async Task Hundreds_of_overflowing_requests_leave_the_queue_empty_and_the_server_serving()
    {
        // A small queue: had a refused request kept its slot, the queue would be full after two.
        await using var slow = await SlowServer.StartAsync(fixture, slots: 1, maxWaiting: 2);
        for (var i = 0; i < 300; i++)
        {
            using var response = await slow.Client.PostAsync("/v1/completions",
                HttpTest.Json($"{{\"prompt\": \"abc\", \"max_tokens\": {int.MaxValue - i}}}"));
            Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        }
        var served = await HttpTest.PostOkAsync(slow.Client, "/v1/completions", "{\"prompt\": \"abc\", \"max_tokens\": 2}");
        Assert.Equal(2, served.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        await slow.AssertIdleAsync();
    }
}
