using System.Buffers.Binary;
using System.Net;
using System.Net.Http.Json;
using System.Runtime.InteropServices;
using System.Text.Json;
using InferenceServer.Client;
using InferenceServer.Composition;
using InferenceServer.Engine;
using InferenceServer.ModelBuilder;
using InferenceServer.ModelBuilder.Checkpoint;
using InferenceServer.ModelBuilder.Lora;
using InferenceServer.Protocol;
using InferenceServer.Tests;
using Microsoft.AspNetCore.Builder;

namespace InferenceServer.Server.Tests;

/// <summary>
/// One server of two small random models built with adapter inputs on q and v, and three random
/// PEFT adapters converted onto them: two on "alpha", one on "beta", loaded as serve loads them
/// (<see cref="CompositionRoot.LoadModels"/> with --adapter options).
/// </summary>
public sealed class MultiModelFixture : IAsyncLifetime
{
    /// <summary>Every served name: the two bases, then their adapters.</summary>
    public static readonly string[] Names = ["alpha", "alpha-sql", "alpha-docs", "beta", "beta-tests"];

    private readonly TempFolder _temp = new();
    private readonly int _httpPort = ServerFixture.FreePort(), _grpcPort = ServerFixture.FreePort();
    private WebApplication? _app;

    public ServedModels Models { get; private set; } = null!;
    public Uri HttpAddress => new($"http://127.0.0.1:{_httpPort}");
    public Uri GrpcAddress => new($"http://127.0.0.1:{_grpcPort}");

    public async Task InitializeAsync()
    {
        var tokenizer = _temp.Combine("tokenizer");
        Directory.CreateDirectory(tokenizer);
        await File.WriteAllTextAsync(Path.Combine(tokenizer, "tokenizer.json"), ServerFixture.TokenizerJson());
        await File.WriteAllTextAsync(Path.Combine(tokenizer, "tokenizer_config.json"), ServerFixture.TokenizerConfigJson);
        var alpha = BuildBase("alpha", seed: 3, tokenizer);
        var beta = BuildBase("beta", seed: 5, tokenizer);
        var adapters = new List<AdapterOption>();
        foreach (var (model, name, seed) in new[] { (alpha, "alpha-sql", 11UL), (alpha, "alpha-docs", 12UL), (beta, "beta-tests", 13UL) })
        {
            var peft = WritePeft(_temp.Combine("peft-" + name), seed);
            adapters.Add(new AdapterOption(Path.GetFileName(model), name, LoraAdapterConverter.Convert(peft, model, name)));
        }
        Models = CompositionRoot.LoadModels([alpha, beta], adapters, maxBatch: 4, contextLength: 256, intraOpThreads: 1, new EngineOptions { MaxWaitingRequests = 64 });
        var state = new ServerState();
        _app = ServerHost.Build(new ServerOptions { HttpPort = _httpPort, GrpcPort = _grpcPort, LogLevel = Microsoft.Extensions.Logging.LogLevel.Warning }, Models, state);
        await _app.StartAsync();
        state.State = ServingState.Serving;
    }

    public async Task DisposeAsync()
    {
        if (_app is not null)
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
        }
        await Models.DisposeAsync();
        _temp.Dispose();
    }

    public async Task AssertIdleAsync()
    {
        foreach (var model in Models.Bases)
            await ServerFixture.AssertIdleAsync(model.Engine);
    }

    private string BuildBase(string name, ulong seed, string tokenizer)
    {
        var config = new HfConfig
        {
            Architecture = "LlamaForCausalLM", HiddenSize = 64, IntermediateSize = 128, NumAttentionHeads = 4, NumKeyValueHeads = 2,
            NumHiddenLayers = 2, VocabSize = ServerFixture.VocabSize, HeadDim = 16, MaxPositionEmbeddings = 256, EosTokenIds = [ServerFixture.EndOfText],
        };
        var path = _temp.Combine(name);
        using var weights = new RandomWeights(seed, standardDeviation: 0.1f);
        DecoderModelBuilder.Build(config, weights, path, new BuildOptions { LoraTargets = ["q_proj", "v_proj"] }, tokenizer);
        return path;
    }

    // A PEFT folder as save_pretrained writes it: rank 4 on q_proj and v_proj, weights large enough to move the greedy tokens.
    private static string WritePeft(string folder, ulong seed)
    {
        Directory.CreateDirectory(folder);
        const int rank = 4, hidden = 64;
        File.WriteAllText(Path.Combine(folder, PeftAdapter.ConfigFileName), $$"""
            {"peft_type": "LORA", "r": {{rank}}, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "bias": "none", "use_dora": false, "use_rslora": false}
            """);
        using var random = new RandomWeights(seed, standardDeviation: 0.5f);
        var tensors = new List<(string Name, long[] Shape, float[] Values)>();
        for (var layer = 0; layer < 2; layer++)
        {
            foreach (var (module, outputs) in new[] { ("q_proj", 64), ("v_proj", 32) })
            {
                var prefix = $"base_model.model.model.layers.{layer}.self_attn.{module}";
                tensors.Add(($"{prefix}.lora_A.weight", [rank, hidden], random.Read($"{prefix}.lora_A.weight", [rank, hidden])));
                tensors.Add(($"{prefix}.lora_B.weight", [outputs, rank], random.Read($"{prefix}.lora_B.weight", [outputs, rank])));
            }
        }
        WriteSafetensors(Path.Combine(folder, PeftAdapter.WeightsFileName), tensors);
        return folder;
    }

    private static void WriteSafetensors(string path, List<(string Name, long[] Shape, float[] Values)> tensors)
    {
        var header = new Dictionary<string, object>();
        long offset = 0;
        foreach (var (name, shape, values) in tensors)
        {
            header[name] = new { dtype = "F32", shape, data_offsets = new[] { offset, offset + values.Length * 4L } };
            offset += values.Length * 4L;
        }
        var json = JsonSerializer.SerializeToUtf8Bytes(header);
        using var file = File.Create(path);
        Span<byte> length = stackalloc byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(length, json.Length);
        file.Write(length);
        file.Write(json);
        foreach (var (_, _, values) in tensors)
            file.Write(MemoryMarshal.AsBytes(values.AsSpan()));
    }
}

[CollectionDefinition(Name)]
public sealed class MultiModelCollection : ICollectionFixture<MultiModelFixture>
{
    public const string Name = "multi-model server";
}

[Collection(MultiModelCollection.Name)]
public sealed class MultiModelTests(MultiModelFixture server) : IAsyncLifetime
{
    private readonly HttpClient _http = new() { BaseAddress = server.HttpAddress };
    private readonly InferenceClient _grpc = new(server.GrpcAddress);

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        await server.AssertIdleAsync();
        _http.Dispose();
        _grpc.Dispose();
    }

    private async Task<(string Text, string Model, int Cached)> CompleteAsync(string model, string prompt, int maxTokens = 8)
    {
        var body = JsonSerializer.Serialize(new { model, prompt, max_tokens = maxTokens, temperature = 0, ignore_eos = true });
        var json = await HttpTest.PostOkAsync(_http, "/v1/completions", body);
        return (json.GetProperty("choices")[0].GetProperty("text").GetString()!, json.GetProperty("model").GetString()!,
            json.GetProperty("usage").GetProperty("prompt_tokens_details").GetProperty("cached_tokens").GetInt32());
    }

    [Fact]
    public async Task Each_model_and_adapter_answers_as_it_does_alone_under_concurrent_requests()
    {
        const string prompt = "SELECT name FROM users WHERE";
        var alone = new Dictionary<string, string>();
        foreach (var name in MultiModelFixture.Names)
        {
            var (text, model, _) = await CompleteAsync(name, prompt);
            Assert.Equal(name, model);
            alone[name] = text;
        }
        // The adapters change the answers: a server that ran every request on its base would fail here.
        Assert.True(alone.Values.Distinct().Count() >= 4, string.Join(" | ", alone.Select(a => $"{a.Key}: {a.Value}")));

        // Three rounds of every name at once over both front ends: rows of different adapters share runs.
        var calls = new List<Task<(string Name, string Text)>>();
        for (var round = 0; round < 3; round++)
        {
            foreach (var name in MultiModelFixture.Names)
            {
                calls.Add(Task.Run(async () => (name, (await CompleteAsync(name, prompt)).Text)));
                calls.Add(Task.Run(async () => (name, (await _grpc.GenerateAsync(new GenerateRequest
                {
                    Model = name, Prompt = prompt, MaxTokens = 8, Temperature = 0, IgnoreEos = true,
                })).Text)));
            }
        }
        foreach (var (name, text) in await Task.WhenAll(calls))
            Assert.Equal(alone[name], text);
    }

    [Fact]
    public async Task The_grpc_adapter_field_picks_an_adapter_of_the_model()
    {
        const string prompt = "def test_add():";
        var byModel = await _grpc.GenerateAsync(new GenerateRequest { Model = "beta-tests", Prompt = prompt, MaxTokens = 6, Temperature = 0, IgnoreEos = true });
        var byField = await _grpc.GenerateAsync(new GenerateRequest { Model = "beta", Adapter = "beta-tests", Prompt = prompt, MaxTokens = 6, Temperature = 0, IgnoreEos = true });
        Assert.Equal(byModel.Text, byField.Text);
        var wrongBase = await Assert.ThrowsAsync<GrpcCallException>(() =>
            _grpc.GenerateAsync(new GenerateRequest { Model = "alpha", Adapter = "beta-tests", Prompt = prompt, MaxTokens = 2 }));
        Assert.Equal((int)GrpcStatus.NotFound, wrongBase.Status);
        Assert.Contains("not on 'alpha'", wrongBase.StatusMessage, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Prefix_cache_is_not_shared_between_adapters()
    {
        // Longer than a KV block, and used by no other test, so any cached tokens come from this one.
        var prompt = "-- a prompt only this test sends, long enough to fill a block or two of the KV cache: " + new string('x', 40);
        var sqlFirst = await CompleteAsync("alpha-sql", prompt);
        Assert.Equal(0, sqlFirst.Cached);
        var docs = await CompleteAsync("alpha-docs", prompt);
        Assert.Equal(0, docs.Cached); // alpha-sql's KV of the same prompt was not reused
        var plain = await CompleteAsync("alpha", prompt);
        Assert.Equal(0, plain.Cached);
        var sqlAgain = await CompleteAsync("alpha-sql", prompt);
        Assert.True(sqlAgain.Cached > 0, "an adapter reuses its own cached prefix");
        Assert.Equal(sqlFirst.Text, sqlAgain.Text);
        var docsAgain = await CompleteAsync("alpha-docs", prompt);
        Assert.Equal(docs.Text, docsAgain.Text);
        Assert.NotEqual(sqlFirst.Text, docs.Text);
    }

    [Fact]
    public async Task Unknown_models_and_adapters_are_404_and_not_found()
    {
        var body = JsonSerializer.Serialize(new { model = "gamma", prompt = "x", max_tokens = 2 });
        using var response = await _http.PostAsync("/v1/completions", HttpTest.Json(body));
        var error = await HttpTest.AssertErrorAsync(response, HttpStatusCode.NotFound, "model_not_found", "model");
        Assert.Contains("gamma", error.GetProperty("message").GetString(), StringComparison.Ordinal);
        using var card = await _http.GetAsync("/v1/models/gamma");
        await HttpTest.AssertErrorAsync(card, HttpStatusCode.NotFound, "model_not_found");

        var byModel = await Assert.ThrowsAsync<GrpcCallException>(() => _grpc.GenerateAsync(new GenerateRequest { Model = "gamma", Prompt = "x", MaxTokens = 2 }));
        Assert.Equal((int)GrpcStatus.NotFound, byModel.Status);
        Assert.Contains("The model 'gamma' does not exist; this server serves 'alpha', 'alpha-sql'", byModel.StatusMessage, StringComparison.Ordinal);
        var byAdapter = await Assert.ThrowsAsync<GrpcCallException>(() =>
            _grpc.GenerateAsync(new GenerateRequest { Model = "alpha", Adapter = "nope", Prompt = "x", MaxTokens = 2 }));
        Assert.Equal((int)GrpcStatus.NotFound, byAdapter.Status);
    }

    [Fact]
    public async Task Models_lists_every_model_and_adapter_with_its_base()
    {
        var list = await _http.GetFromJsonAsync<JsonElement>("/v1/models");
        var cards = list.GetProperty("data").EnumerateArray().ToArray();
        Assert.Equal(MultiModelFixture.Names.Order(), cards.Select(c => c.GetProperty("id").GetString()!).Order());
        var sql = cards.Single(c => c.GetProperty("id").GetString() == "alpha-sql");
        Assert.Equal("alpha", sql.GetProperty("parent").GetString());
        Assert.Equal("alpha", sql.GetProperty("root").GetString());
        var beta = cards.Single(c => c.GetProperty("id").GetString() == "beta");
        Assert.Equal(JsonValueKind.Null, beta.GetProperty("parent").ValueKind);
        Assert.Equal("beta", beta.GetProperty("root").GetString());

        var models = await _grpc.ListModelsAsync();
        Assert.Equal(MultiModelFixture.Names.Order(), models.Models.Select(m => m.Name).Order());
        Assert.Equal("beta", models.Models.Single(m => m.Name == "beta-tests").Parent);
        Assert.Equal("", models.Models.Single(m => m.Name == "alpha").Parent);
    }

    [Fact]
    public async Task Llama_cpp_endpoints_take_a_model_too()
    {
        async Task<string> InfillAsync(string model) =>
            (await HttpTest.PostOkAsync(_http, "/infill", JsonSerializer.Serialize(new { model, input_prefix = "def f(x):\n    return ", input_suffix = "\n", n_predict = 6, temperature = 0 })))
                .GetProperty("content").GetString()!;
        var plain = await InfillAsync("alpha");
        var adapted = await InfillAsync("alpha-docs");
        Assert.NotEqual(plain, adapted);
        Assert.Equal(plain, await InfillAsync(""));
        var completion = await HttpTest.PostOkAsync(_http, "/completion", JsonSerializer.Serialize(new { model = "beta-tests", prompt = "abc", n_predict = 4, temperature = 0 }));
        Assert.Equal((await CompleteAsync("beta-tests", "abc", maxTokens: 4)).Text, completion.GetProperty("content").GetString());
        using var unknown = await _http.PostAsync("/infill", HttpTest.Json("{\"model\": \"gamma\", \"input_prefix\": \"x\"}"));
        await HttpTest.AssertErrorAsync(unknown, HttpStatusCode.NotFound, "model_not_found");
    }

    [Theory]
    [InlineData("sql=/models/base/adapters/sql", "", "sql", "/models/base/adapters/sql")]
    [InlineData("alpha:sql=/a=b", "alpha", "sql", "/a=b")]
    public void An_adapter_option_names_its_model_name_and_folder(string text, string model, string name, string path) =>
        Assert.Equal(new AdapterOption(model, name, path), AdapterOption.Parse(text));

    [Fact]
    public async Task Metrics_carry_each_models_name()
    {
        await CompleteAsync("beta", "x", maxTokens: 2);
        var text = await _http.GetStringAsync("/metrics");
        Assert.Contains("vllm:num_requests_running{model_name=\"alpha\"}", text, StringComparison.Ordinal);
        Assert.Contains("vllm:num_requests_running{model_name=\"beta\"}", text, StringComparison.Ordinal);
        var health = await _http.GetFromJsonAsync<JsonElement>("/health");
        Assert.Equal("ok", health.GetProperty("status").GetString());
    }
}
