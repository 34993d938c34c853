using System.Text;
using Google.Protobuf;
using InferenceServer.Client;
using InferenceServer.Protocol;
using Grpc.Health.V1;

namespace InferenceServer.Server.Tests;

/// <summary>What a hostile or unusual gRPC client sends: text that is not UTF-8, extreme or malformed deadlines, no API key.</summary>
[Collection(ServerCollection.Name)]
public sealed class GrpcRobustnessTests(ServerFixture server)
{
    /// <summary>A request whose marker text "@@" is replaced by bytes that are not UTF-8 once serialized.</summary>
    private static byte[] WithInvalidUtf8(GenerateRequest request)
    {
        var bytes = request.ToByteArray();
        var at = bytes.AsSpan().IndexOf("@@"u8);
        Assert.True(at >= 0);
        bytes[at] = 0xFF;
        bytes[at + 1] = 0xFE;
        return bytes;
    }

    public static TheoryData<string, GenerateRequest> InvalidText => new()
    {
        { "prompt", new GenerateRequest { Prompt = "a@@", MaxTokens = 2 } },
        { "stop", new GenerateRequest { Prompt = "a", Stop = { "x", "@@" }, MaxTokens = 2 } },
        { "infill.prefix", new GenerateRequest { Infill = new Infill { Prefix = "@@", Suffix = "b" }, MaxTokens = 2 } },
    };

    [Theory]
    [MemberData(nameof(InvalidText))]
    public async Task Text_that_is_not_utf8_is_invalid_argument_naming_the_field(string field, GenerateRequest request)
    {
        using var http = GrpcRaw.CreateClient();
        var result = await GrpcRaw.CallAsync(http, server.GrpcAddress, GrpcRaw.Frame(WithInvalidUtf8(request)));
        Assert.Equal(GrpcStatus.InvalidArgument, result.Status);
        Assert.Equal($"{field} is not valid UTF-8", result.Message);
        await server.AssertEngineIdleAsync();
    }

    [Theory]
    // Valid, and too far away for a timer: no deadline.
    [InlineData("99999999H", GrpcStatus.Ok)]
    [InlineData("99999999S", GrpcStatus.Ok)]
    [InlineData("4294968S", GrpcStatus.Ok)] // just past what a timer holds
    [InlineData("99999999m", GrpcStatus.Ok)]
    // Outside the grammar (at most 8 digits and a unit): ignored, as Grpc.AspNetCore does, so no deadline either.
    [InlineData("123456789S", GrpcStatus.Ok)]
    [InlineData("5x", GrpcStatus.Ok)]
    [InlineData("S", GrpcStatus.Ok)]
    [InlineData("-1S", GrpcStatus.Ok)]
    [InlineData("1.5S", GrpcStatus.Ok)]
    public async Task Long_deadlines_mean_none_and_malformed_ones_are_ignored(string timeout, GrpcStatus expected)
    {
        using var http = GrpcRaw.CreateClient();
        var result = await GrpcRaw.CallAsync(http, server.GrpcAddress, GrpcRaw.Frame(new GenerateRequest { Prompt = "ab", MaxTokens = 2 }),
            timeout: timeout);
        Assert.Equal(expected, result.Status);
        await server.AssertEngineIdleAsync();
    }

    [Fact]
    public async Task Every_call_carries_a_request_id_and_keeps_a_sane_one_from_the_client()
    {
        using var http = GrpcRaw.CreateClient();
        var frame = GrpcRaw.Frame(new ListModelsRequest());
        var generated = await GrpcRaw.CallAsync(http, server.GrpcAddress, frame, "/inference.v1.Inference/ListModels");
        Assert.StartsWith("req-", Assert.Single(generated.Headers.GetValues("x-request-id")), StringComparison.Ordinal);
        var kept = await GrpcRaw.CallAsync(http, server.GrpcAddress, frame, "/inference.v1.Inference/ListModels",
            headers: new Dictionary<string, string> { ["x-request-id"] = "trace-42.a_b:c" });
        Assert.Equal("trace-42.a_b:c", Assert.Single(kept.Headers.GetValues("x-request-id")));
        var failed = await GrpcRaw.CallAsync(http, server.GrpcAddress, frame, "/inference.v1.Inference/Nope",
            headers: new Dictionary<string, string> { ["x-request-id"] = "has spaces and \"quotes\"" });
        Assert.Equal(GrpcStatus.Unimplemented, failed.Status);
        Assert.StartsWith("req-", Assert.Single(failed.Headers.GetValues("x-request-id")), StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_http_port_does_not_answer_grpc_methods()
    {
        using var http = new HttpClient { BaseAddress = server.HttpAddress };
        using var content = new ByteArrayContent(GrpcRaw.Frame(new ListModelsRequest()));
        content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/grpc");
        using var response = await http.PostAsync(new Uri("/inference.v1.Inference/ListModels", UriKind.Relative), content);
        Assert.Equal(System.Net.HttpStatusCode.NotFound, response.StatusCode);
        Assert.False(response.Headers.Contains("grpc-status"));
    }

    [Fact]
    public async Task With_api_keys_grpc_health_needs_no_key_and_everything_else_does()
    {
        var options = SecondServer.OptionsLike(server.Options) with { ApiKeys = ["right-key"] };
        await using var keyed = await SecondServer.StartAsync(options, server.Model, new ServerState { State = ServingState.Serving });
        using (var anonymous = new InferenceClient(keyed.GrpcAddress))
        {
            Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, (await anonymous.CheckHealthAsync()).Status);
            var refused = await Assert.ThrowsAsync<GrpcCallException>(() => anonymous.ListModelsAsync());
            Assert.Equal((int)GrpcStatus.Unauthenticated, refused.Status);
        }
        using (var wrong = new InferenceClient(keyed.GrpcAddress, apiKey: "right-kez"))
            Assert.Equal((int)GrpcStatus.Unauthenticated, (await Assert.ThrowsAsync<GrpcCallException>(() => wrong.ListModelsAsync())).Status);
        using (var right = new InferenceClient(keyed.GrpcAddress, apiKey: "right-key"))
            Assert.Single((await right.ListModelsAsync()).Models);

    }

    [Fact]
    public void Api_keys_match_exactly_whatever_their_length()
    {
        var keys = new ApiKeys(["alpha", "a-much-longer-second-key"]);
        Assert.True(keys.Required);
        Assert.True(keys.Accepts("Bearer alpha"));
        Assert.True(keys.Accepts("bearer  a-much-longer-second-key "));
        Assert.False(keys.Accepts("Bearer alph"));
        Assert.False(keys.Accepts("Bearer alphaa"));
        Assert.False(keys.Accepts("Bearer ALPHA"));
        Assert.False(keys.Accepts("Basic alpha"));
        Assert.False(keys.Accepts(""));
        Assert.False(keys.Accepts(null));
        Assert.False(new ApiKeys([]).Required);
    }

    [Fact]
    public void An_unexpected_failure_is_logged_once_and_the_client_learns_only_the_request_id()
    {
        var logs = new LogCapture();
        var context = new Microsoft.AspNetCore.Http.DefaultHttpContext();
        context.Features.Set(new RequestRecord("req-test-1"));
        var failure = CallFailures.Classify(new InvalidOperationException("secret internal detail"), context, new ServerState(),
            logs.CreateLogger("test"));
        Assert.Equal(GrpcStatus.Internal, failure.Status);
        Assert.Equal("internal error (request id req-test-1)", failure.Message);
        var entry = Assert.Single(logs.Entries);
        Assert.Equal(Microsoft.Extensions.Logging.LogLevel.Error, entry.Level);
        Assert.Contains("req-test-1", entry.Message, StringComparison.Ordinal);
        Assert.IsType<InvalidOperationException>(entry.Exception);

        // Expected failures keep their status and are not logged as errors.
        Assert.Equal(GrpcStatus.InvalidArgument, CallFailures.Classify(new RequestException(InferenceServer.Engine.RequestErrorCode.InvalidArgument, "bad"), context, new ServerState(), logs.CreateLogger("test")).Status);
        Assert.Single(logs.Entries);
        Assert.DoesNotContain("secret", RequestException.From(new InvalidOperationException("secret")).Message, StringComparison.Ordinal);
    }
}
