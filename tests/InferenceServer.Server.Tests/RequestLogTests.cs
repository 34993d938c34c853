using System.Net;
using InferenceServer.Client;
using InferenceServer.Protocol;
using Microsoft.Extensions.Logging;

namespace InferenceServer.Server.Tests;

/// <summary>One log line per request, at Information, with what is known about it; none below the configured level.</summary>
[Collection(ServerCollection.Name)]
public sealed class RequestLogTests(ServerFixture fixture)
{
    private const string Category = "InferenceServer.Requests";

    [Fact]
    public async Task Each_request_is_one_line_with_status_tokens_duration_and_request_id()
    {
        var logs = new LogCapture();
        var options = SecondServer.OptionsLike(fixture.Options) with { LogLevel = LogLevel.Information };
        await using var server = await SecondServer.StartAsync(options, fixture.Model, new ServerState { State = ServingState.Serving }, logs: logs);

        using (var response = await server.Client.PostAsync(new Uri("/v1/completions", UriKind.Relative),
            HttpTest.Json("""{"prompt": "abc", "max_tokens": 3, "ignore_eos": true}""")))
        {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            var id = response.Headers.GetValues("x-request-id").Single();
            var line = await logs.WaitForAsync(e => e.Category == Category && e.Message.Contains(id, StringComparison.Ordinal));
            Assert.Equal(LogLevel.Information, line.Level);
            Assert.Matches(@"^HTTP POST /v1/completions 200 [0-9.]+ ms prompt_tokens=3 completion_tokens=3 request_id=req-[0-9a-f]{32}$", line.Message);
        }
        using (var response = await server.Client.GetAsync(new Uri("/nowhere", UriKind.Relative)))
        {
            var id = response.Headers.GetValues("x-request-id").Single();
            var line = await logs.WaitForAsync(e => e.Category == Category && e.Message.Contains(id, StringComparison.Ordinal));
            Assert.StartsWith("HTTP GET /nowhere 404 ", line.Message, StringComparison.Ordinal);
            Assert.Contains("prompt_tokens=- completion_tokens=-", line.Message, StringComparison.Ordinal);
        }

        using var grpc = new InferenceClient(server.GrpcAddress);
        await grpc.GenerateAsync(new GenerateRequest { Prompt = "abcd", MaxTokens = 2, RequestId = "mine" });
        var grpcLine = await logs.WaitForAsync(e => e.Category == Category && e.Message.StartsWith("gRPC ", StringComparison.Ordinal));
        Assert.Matches(@"^gRPC POST /inference.v1.Inference/Generate Ok [0-9.]+ ms prompt_tokens=4 completion_tokens=2 request_id=req-", grpcLine.Message);
        await Assert.ThrowsAsync<GrpcCallException>(() => grpc.GenerateAsync(new GenerateRequest { Prompt = "", MaxTokens = 2 }));
        await logs.WaitForAsync(e => e.Category == Category && e.Message.Contains("Generate InvalidArgument", StringComparison.Ordinal));

        Assert.Equal(4, logs.InCategory(Category).Count); // one each, no more
        Assert.DoesNotContain(logs.Entries, e => e.Category.StartsWith("Microsoft.AspNetCore", StringComparison.Ordinal) && e.Level < LogLevel.Warning);
        await fixture.AssertEngineIdleAsync();
    }

    [Fact]
    public async Task Below_the_configured_level_nothing_is_logged()
    {
        var logs = new LogCapture();
        var options = SecondServer.OptionsLike(fixture.Options) with { LogLevel = LogLevel.Warning };
        await using var server = await SecondServer.StartAsync(options, fixture.Model, new ServerState { State = ServingState.Serving }, logs: logs);
        using (var response = await server.Client.GetAsync(new Uri("/v1/models", UriKind.Relative)))
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        await Task.Delay(100);
        Assert.Empty(logs.InCategory(Category));
    }

    [Theory]
    [InlineData("trace", LogLevel.Trace)]
    [InlineData("Information", LogLevel.Information)]
    [InlineData("info", LogLevel.Information)]
    [InlineData("WARN", LogLevel.Warning)]
    [InlineData("none", LogLevel.None)]
    [InlineData("loud", null)]
    public void Level_names_parse(string name, LogLevel? level) => Assert.Equal(level, ServerLogging.Parse(name));
}
