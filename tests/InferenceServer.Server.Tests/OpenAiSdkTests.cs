using System.Text.Json;
using InferenceServer.Tests;

namespace InferenceServer.Server.Tests;

/// <summary>
/// The official `openai` npm SDK against the live server: clients/install-npm-client.sh installs a pinned
/// version once into the user's cache (outside the repository), clients/openai-completions.mjs calls
/// completions.create whole and streamed and prints what the SDK parsed.
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class OpenAiSdkTests(ServerFixture fixture) : IDisposable
{
    private readonly HttpClient _client = new() { BaseAddress = fixture.HttpAddress };

    public void Dispose() => _client.Dispose();

    [Fact]
    public async Task The_openai_sdk_reads_completions_whole_and_streamed()
    {
        var sdk = ExternalClients.NpmClient("openai");
        Assert.True(File.Exists(Path.Combine(sdk, "node_modules", "openai", "package.json")), $"install-npm-client.sh printed {sdk}");
        var output = await Task.Run(() => ExternalClients.Run("node",
            [Path.Combine(ExternalClients.Folder, "openai-completions.mjs"), "--npm", sdk, "--base-url", new Uri(fixture.HttpAddress, "/v1").ToString(), "--model", fixture.Model.Name],
            TimeSpan.FromMinutes(2)));
        var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(line => JsonDocument.Parse(line).RootElement.Clone())
            .ToDictionary(e => e.GetProperty("call").GetString()!, StringComparer.Ordinal);

        // What our own HTTP call gets for the same request.
        var expected = (await HttpTest.PostOkAsync(_client, "/v1/completions",
                $$"""{"model": "{{fixture.Model.Name}}", "prompt": "def fib(n):", "max_tokens": 10, "temperature": 0, "seed": 7, "ignore_eos": true}"""))
            .GetProperty("choices")[0].GetProperty("text").GetString();

        var create = lines["create"];
        Assert.StartsWith("cmpl-", create.GetProperty("id").GetString(), StringComparison.Ordinal);
        Assert.Equal("text_completion", create.GetProperty("object").GetString());
        Assert.Equal(fixture.Model.Name, create.GetProperty("model").GetString());
        Assert.Equal(1, create.GetProperty("choices").GetInt32());
        Assert.Equal(expected, create.GetProperty("text").GetString());
        Assert.Equal("length", create.GetProperty("finish_reason").GetString());
        Assert.Equal(10, create.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        Assert.Equal(11, create.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(21, create.GetProperty("usage").GetProperty("total_tokens").GetInt32());

        var stream = lines["stream"];
        Assert.Equal(expected, stream.GetProperty("text").GetString());
        Assert.Equal("length", stream.GetProperty("finish_reason").GetString());
        Assert.True(stream.GetProperty("chunks").GetInt32() >= 2);

        var usage = lines["stream_usage"].GetProperty("usage");
        Assert.Equal(10, usage.GetProperty("completion_tokens").GetInt32());
        Assert.Equal(21, usage.GetProperty("total_tokens").GetInt32());

        var unknown = lines["unknown_model"];
        Assert.Equal(404, unknown.GetProperty("status").GetInt32());
        Assert.Equal("model_not_found", unknown.GetProperty("code").GetString());
        Assert.Equal("invalid_request_error", unknown.GetProperty("type").GetString());
        Assert.Equal("model", unknown.GetProperty("param").GetString());
        Assert.Equal("NotFoundError", unknown.GetProperty("name").GetString());
        await fixture.AssertEngineIdleAsync();
    }
}
