using System.Buffers.Binary;
using System.Net;
using System.Net.Http.Headers;
using Google.Protobuf;
using InferenceServer.Client;
using InferenceServer.Protocol;
using Grpc.Health.V1;
using Grpc.Reflection.V1;

namespace InferenceServer.Server.Tests;

[Collection(ServerCollection.Name)]
public sealed class GrpcTests(ServerFixture server) : IDisposable
{
    private readonly InferenceClient _client = new(server.GrpcAddress);

    public void Dispose() => _client.Dispose();

    private static GenerateRequest Greedy(string prompt, int maxTokens) => new() { Prompt = prompt, MaxTokens = maxTokens, Temperature = 0 };

    [Fact]
    public async Task Generate_returns_the_whole_completion_with_usage()
    {
        var response = await _client.GenerateAsync(Greedy("def add(a, b):", 8));
        Assert.Equal(8, response.TokenIds.Count);
        Assert.Equal(FinishReason.Length, response.FinishReason);
        Assert.Equal(8, response.Usage.CompletionTokens);
        Assert.Equal("def add(a, b):".Length, response.Usage.PromptTokens); // one byte token per character
        await server.AssertEngineIdleAsync();
    }

    [Fact]
    public async Task GenerateStream_sends_deltas_that_add_up_to_the_unary_result()
    {
        var unary = await _client.GenerateAsync(Greedy("for i in range(", 12));
        var ids = new List<int>();
        var text = "";
        GenerateResponse? last = null;
        await foreach (var delta in _client.GenerateStreamAsync(Greedy("for i in range(", 12)))
        {
            ids.AddRange(delta.TokenIds);
            text += delta.Text;
            last = delta;
        }
        Assert.Equal(unary.TokenIds, ids);
        Assert.Equal(unary.Text, text);
        Assert.Equal(FinishReason.Length, last!.FinishReason);
        Assert.Equal(12, last.Usage.CompletionTokens);
        await server.AssertEngineIdleAsync();
    }

    [Fact]
    public async Task Ignore_eos_generates_past_the_end_of_text_token()
    {
        // Seeded sampling from this random-weight model draws end-of-text within a few hundred tokens.
        GenerateRequest Request(bool ignoreEos) => new()
        {
            Prompt = "def f(", MaxTokens = 400, Temperature = 1, Seed = 7, IgnoreEos = ignoreEos,
        };
        var ended = await _client.GenerateAsync(Request(ignoreEos: false));
        Assert.Equal(FinishReason.Stop, ended.FinishReason);
        Assert.True(ended.Usage.CompletionTokens < 400, $"{ended.Usage.CompletionTokens} tokens");
        var kept = await _client.GenerateAsync(Request(ignoreEos: true));
        Assert.Equal(FinishReason.Length, kept.FinishReason);
        Assert.Equal(400, kept.Usage.CompletionTokens);
        await server.AssertEngineIdleAsync();
    }

    [Fact]
    public async Task Infill_builds_a_fill_in_the_middle_prompt()
    {
        var request = new GenerateRequest { Infill = new Infill { Prefix = "def f(x):\n    ", Suffix = "\n    return y\n" }, MaxTokens = 6, Temperature = 0 };
        var response = await _client.GenerateAsync(request);
        // <fim_prefix> prefix <fim_suffix> suffix <fim_middle>: one token per byte plus three markers.
        Assert.Equal("def f(x):\n    ".Length + "\n    return y\n".Length + 3, response.Usage.PromptTokens);
        Assert.NotEqual(FinishReason.Unspecified, response.FinishReason);
        await server.AssertEngineIdleAsync();
    }

    [Fact]
    public async Task Token_healing_is_asked_for_per_request()
    {
        var plain = await _client.GenerateAsync(new GenerateRequest { Prompt = "x = ", MaxTokens = 6, Temperature = 0 });
        var healed = await _client.GenerateAsync(new GenerateRequest { Prompt = "x = ", MaxTokens = 6, Temperature = 0, TokenHealing = true });
        Assert.Equal(4, plain.Usage.PromptTokens);
        Assert.Equal(3, healed.Usage.PromptTokens); // the trailing space was taken back and spelled again
        Assert.True(healed.Usage.CompletionTokens >= 1);
        await server.AssertEngineIdleAsync();
    }

    [Fact]
    public async Task Tokenize_detokenize_and_model_info()
    {
        var tokens = await _client.TokenizeAsync(new TokenizeRequest { Text = "héllo" });
        Assert.Equal(6, tokens.TokenIds.Count); // bytes
        Assert.Equal("héllo", (await _client.DetokenizeAsync(new DetokenizeRequest { TokenIds = { tokens.TokenIds } })).Text);
        var models = await _client.ListModelsAsync();
        var info = Assert.Single(models.Models);
        Assert.Equal(server.Model.Name, info.Name);
        Assert.Equal(512, info.ContextLength);
        Assert.Equal("starcoder", info.FimFamily);
        Assert.Equal(info, await _client.GetModelInfoAsync(server.Model.Name));
        var missing = await Assert.ThrowsAsync<GrpcCallException>(() => _client.GetModelInfoAsync("other-model"));
        Assert.Equal((int)GrpcStatus.NotFound, missing.Status);
        var badId = await Assert.ThrowsAsync<GrpcCallException>(() => _client.DetokenizeAsync(new DetokenizeRequest { TokenIds = { 9999 } }));
        Assert.Equal((int)GrpcStatus.InvalidArgument, badId.Status);
    }

    [Fact]
    public async Task Cancelling_a_stream_frees_the_sequence()
    {
        await using var slow = await SlowServer.StartAsync(server, slots: 2, maxWaiting: 4);
        using var client = new InferenceClient(slow.GrpcAddress);
        using var cancel = new CancellationTokenSource();
        var received = 0;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var delta in client.GenerateStreamAsync(new GenerateRequest { PromptTokenIds = new TokenIds { Ids = { 97 } }, MaxTokens = 400 }, cancellationToken: cancel.Token))
            {
                received += delta.TokenIds.Count;
                if (received >= 2)
                    await cancel.CancelAsync();
            }
        });
        Assert.True(slow.Model.Engine.Snapshot.Running <= 1);
        await slow.AssertIdleAsync(); // freed long before the 400 tokens (4 s) would have ended
    }

    [Fact]
    public async Task A_passed_deadline_ends_the_call_with_deadline_exceeded()
    {
        // The slow stand-in model takes 10 ms a token: 500 tokens take 5 s, far past the deadline and the idle check.
        await using var slow = await SlowServer.StartAsync(server, slots: 2, maxWaiting: 4);
        using var client = new InferenceClient(slow.GrpcAddress);
        var e = await Assert.ThrowsAsync<GrpcCallException>(async () =>
        {
            await foreach (var _ in client.GenerateStreamAsync(new GenerateRequest { PromptTokenIds = new TokenIds { Ids = { 97, 98 } }, MaxTokens = 500 }, deadline: TimeSpan.FromMilliseconds(200)))
            {
            }
        });
        Assert.Equal((int)GrpcStatus.DeadlineExceeded, e.Status);
        await slow.AssertIdleAsync();
    }

    [Theory]
    [InlineData("", 5, (int)GrpcStatus.InvalidArgument, "prompt is empty")]
    [InlineData("x", -3, (int)GrpcStatus.InvalidArgument, "max_tokens")]
    public async Task Bad_parameters_are_invalid_argument(string prompt, int maxTokens, int status, string expected)
    {
        var e = await Assert.ThrowsAsync<GrpcCallException>(() => _client.GenerateAsync(new GenerateRequest { Prompt = prompt, MaxTokens = maxTokens }));
        Assert.Equal(status, e.Status);
        Assert.Contains(expected, e.StatusMessage, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Other_bad_requests_get_their_status_and_the_server_keeps_serving()
    {
        async Task Expect(GrpcStatus status, GenerateRequest request)
        {
            var e = await Assert.ThrowsAsync<GrpcCallException>(() => _client.GenerateAsync(request));
            Assert.Equal((int)status, e.Status);
        }
        await Expect(GrpcStatus.InvalidArgument, new GenerateRequest { Prompt = "x", TopP = 0 });
        await Expect(GrpcStatus.InvalidArgument, new GenerateRequest { Prompt = new string('a', 600) });
        await Expect(GrpcStatus.InvalidArgument, new GenerateRequest { MaxTokens = 4 });
        await Expect(GrpcStatus.NotFound, new GenerateRequest { Model = "nope", Prompt = "x" });
        await Expect(GrpcStatus.InvalidArgument, new GenerateRequest { PromptTokenIds = new TokenIds { Ids = { 1, 5000 } } });

        var unknown = await Assert.ThrowsAsync<GrpcCallException>(() =>
            _client.UnaryAsync("/inference.v1.Inference/Nope", new ListModelsRequest(), ListModelsResponse.Parser, null, default));
        Assert.Equal((int)GrpcStatus.Unimplemented, unknown.Status);

        Assert.Equal(4, (await _client.GenerateAsync(Greedy("ok", 4))).TokenIds.Count);
    }

    [Fact]
    public async Task Raw_malformed_calls_get_clean_statuses()
    {
        using var http = GrpcRaw.CreateClient();
        var frame = Frame(Greedy("x", 2));

        // A frame cut short.
        Assert.Equal(GrpcStatus.Internal, await RawCallAsync(http, frame[..(frame.Length - 2)]));
        // Bytes that are not a GenerateRequest.
        Assert.Equal(GrpcStatus.Internal, await RawCallAsync(http, [0, 0, 0, 0, 3, 0xFF, 0xFF, 0xFF]));
        // A length over the message limit.
        var huge = new byte[5];
        BinaryPrimitives.WriteUInt32BigEndian(huge.AsSpan(1), (uint)(server.Options.MaxMessageBytes + 1));
        Assert.Equal(GrpcStatus.ResourceExhausted, await RawCallAsync(http, huge));
        // A message compressed in a way we do not speak.
        var deflated = frame.ToArray();
        deflated[0] = 1;
        Assert.Equal(GrpcStatus.Unimplemented, await RawCallAsync(http, deflated, encoding: "deflate"));
        // No message at all.
        Assert.Equal(GrpcStatus.Internal, await RawCallAsync(http, []));

        // Not gRPC: plain HTTP 415.
        using var wrongType = new ByteArrayContent(frame);
        wrongType.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        using var wrongRequest = new HttpRequestMessage(HttpMethod.Post, new Uri(server.GrpcAddress, "/inference.v1.Inference/Generate"))
        {
            Content = wrongType,
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
        };
        using var response = await http.SendAsync(wrongRequest);
        Assert.Equal(HttpStatusCode.UnsupportedMediaType, response.StatusCode);

        Assert.Equal(2, (await _client.GenerateAsync(Greedy("ok", 2))).TokenIds.Count);
        await server.AssertEngineIdleAsync();
    }

    private async Task<GrpcStatus> RawCallAsync(HttpClient http, byte[] body, string? encoding = null) =>
        (await GrpcRaw.CallAsync(http, server.GrpcAddress, body, encoding: encoding)).Status ?? (GrpcStatus)(-1);

    private static byte[] Frame(IMessage message) => GrpcRaw.Frame(message);

    [Fact]
    public async Task Health_check_reports_serving_and_refuses_unknown_services()
    {
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, (await _client.CheckHealthAsync()).Status);
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, (await _client.CheckHealthAsync("inference.v1.Inference")).Status);
        var unknown = await Assert.ThrowsAsync<GrpcCallException>(() => _client.CheckHealthAsync("other.Service"));
        Assert.Equal((int)GrpcStatus.NotFound, unknown.Status);
    }

    [Fact]
    public async Task Reflection_lists_the_services_and_describes_them()
    {
        var list = await _client.UnaryAsync("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            new ServerReflectionRequest { ListServices = "*" }, ServerReflectionResponse.Parser, null, default);
        var names = list.ListServicesResponse.Service.Select(s => s.Name).ToList();
        Assert.Contains("inference.v1.Inference", names);
        Assert.Contains("grpc.health.v1.Health", names);

        var file = await _client.UnaryAsync("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            new ServerReflectionRequest { FileContainingSymbol = "inference.v1.Inference.GenerateStream" }, ServerReflectionResponse.Parser, null, default);
        var descriptor = Google.Protobuf.Reflection.FileDescriptorProto.Parser.ParseFrom(file.FileDescriptorResponse.FileDescriptorProto[0]);
        Assert.Equal("inference.v1", descriptor.Package);
        Assert.Contains(descriptor.Service, s => s.Name == "Inference");

        var missing = await _client.UnaryAsync("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            new ServerReflectionRequest { FileContainingSymbol = "no.Such" }, ServerReflectionResponse.Parser, null, default);
        Assert.Equal((int)GrpcStatus.NotFound, missing.ErrorResponse.ErrorCode);
    }
}
