using System.Net.Http.Json;
using System.Text.Json;
using InferenceServer.Client;
using InferenceServer.Protocol;

namespace InferenceServer.Server.Tests;

/// <summary>
/// Node's @grpc/grpc-js (with the .proto loaded at run time by @grpc/proto-loader) against the live
/// server: a whole GenerateStream, and a stream the client cancels after three messages, whose
/// sequence the engine must free at the start of the next iteration (read from /admin/engine).
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class GrpcJsClientTests(ServerFixture fixture)
{
    [Fact]
    public async Task Grpc_js_reads_a_whole_stream_like_our_client()
    {
        var line = await RunClientAsync(fixture.GrpcAddress, "stream", "--prompt", "def fib(n):", "--max-tokens", "12");

        using var ours = new InferenceClient(fixture.GrpcAddress);
        var expected = await ours.GenerateAsync(new GenerateRequest { Prompt = "def fib(n):", MaxTokens = 12, Temperature = 0 });
        Assert.Equal(0, line.GetProperty("code").GetInt32());
        Assert.True(line.GetProperty("messages").GetInt32() >= 1);
        Assert.Equal(expected.Text, line.GetProperty("text").GetString());
        Assert.Equal(expected.TokenIds, line.GetProperty("token_ids").EnumerateArray().Select(e => e.GetInt32()));
        Assert.Equal(expected.FinishReason.ToString(), ProtoEnumName(line.GetProperty("finish_reason").GetString()!));
        Assert.Equal(expected.Usage.CompletionTokens, line.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        Assert.Equal(expected.Usage.PromptTokens, line.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        await fixture.AssertEngineIdleAsync();
    }

    [Fact]
    public async Task A_stream_grpc_js_cancels_is_freed_within_one_engine_iteration()
    {
        // A model that takes 10 ms a step, so the stream is still running when the client cancels.
        await using var slow = await SlowServer.StartAsync(fixture, slots: 1, maxWaiting: 2);
        var before = await EngineStatusAsync(slow.Client);

        var line = await RunClientAsync(slow.GrpcAddress, "cancel", "--max-tokens", "200");
        Assert.Equal(1, line.GetProperty("code").GetInt32()); // CANCELLED, as grpc-js reports its own cancel
        Assert.Equal(3, line.GetProperty("received").GetInt32());

        await slow.AssertIdleAsync();
        var after = await EngineStatusAsync(slow.Client);
        Assert.Equal(0, after.GetProperty("running").GetInt32());
        Assert.Equal(0, after.GetProperty("kv_blocks_used").GetInt32());
        Assert.Equal(before.GetProperty("cancellations").GetInt64() + 1, after.GetProperty("cancellations").GetInt64());
        Assert.Equal(0, after.GetProperty("late_cancellations").GetInt64());
        Assert.Equal(0, after.GetProperty("interrupted_prefills").GetInt64()); // its stand-in model cannot be interrupted
        // It stopped early: far fewer steps than the 200 tokens asked for.
        Assert.InRange(slow.Decoder.Steps, 3, 150);
    }

    private static async Task<JsonElement> RunClientAsync(Uri address, string call, params string[] more)
    {
        var npm = ExternalClients.NpmClient("grpc-js");
        string[] arguments =
        [
            Path.Combine(ExternalClients.Folder, "grpc-js-client.mjs"), "--npm", npm, "--proto-dir", ExternalClients.ProtoFolder,
            "--target", $"{address.Host}:{address.Port}", "--call", call, .. more,
        ];
        var output = await Task.Run(() => ExternalClients.Run("node", arguments, TimeSpan.FromMinutes(2)));
        return JsonDocument.Parse(output.Trim()).RootElement.Clone();
    }

    private static async Task<JsonElement> EngineStatusAsync(HttpClient client) =>
        await client.GetFromJsonAsync<JsonElement>(new Uri("/admin/engine", UriKind.Relative));

    // proto-loader gives enum names as in the .proto (FINISH_REASON_LENGTH); the C# enum says Length.
    private static string ProtoEnumName(string name) =>
        string.Concat(name["FINISH_REASON_".Length..].Split('_').Select(p => p[0] + p[1..].ToLowerInvariant()));
}
