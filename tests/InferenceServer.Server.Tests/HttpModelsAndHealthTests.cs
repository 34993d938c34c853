using System.Net;
using System.Text.Json;

namespace InferenceServer.Server.Tests;

/// <summary>GET /v1/models, /v1/models/{id}, /health and /metrics.</summary>
[Collection(ServerCollection.Name)]
public sealed class HttpModelsAndHealthTests(ServerFixture fixture) : IDisposable
{
    private readonly HttpClient _client = new() { BaseAddress = fixture.HttpAddress };

    public void Dispose() => _client.Dispose();

    [Fact]
    public async Task Models_lists_the_served_model()
    {
        using var response = await _client.GetAsync("/v1/models");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var list = await HttpTest.ReadJsonAsync(response);
        Assert.Equal("list", list.GetProperty("object").GetString());
        var card = Assert.Single(list.GetProperty("data").EnumerateArray());
        AssertCard(card);

        using var one = await _client.GetAsync($"/v1/models/{fixture.Model.Name}");
        Assert.Equal(HttpStatusCode.OK, one.StatusCode);
        AssertCard(await HttpTest.ReadJsonAsync(one));
    }

    [Fact]
    public async Task Metrics_count_a_request_in_prometheus_text()
    {
        var before = await MetricsScrape.GetAsync(_client);
        using (var completion = await _client.PostAsync("/v1/completions", HttpTest.Json("{\"prompt\": \"def f(x):\", \"max_tokens\": 3, \"temperature\": 0, \"ignore_eos\": true}")))
            Assert.Equal(HttpStatusCode.OK, completion.StatusCode);
        var after = await MetricsScrape.GetAsync(_client);

        // Our own names, each series labelled with the served model.
        var model = $"model_name=\"{fixture.Model.Name}\"";
        Assert.Equal("counter", after.Types["inference_requests_total"]);
        Assert.Equal("histogram", after.Types["inference_time_to_first_token_seconds"]);
        // Other tests share this server: counts only grow, by at least this request's.
        Assert.True(after[$"inference_requests_total{{{model}}}"] >= before[$"inference_requests_total{{{model}}}"] + 1);
        Assert.True(after[$"inference_tokens_generated_total{{{model}}}"] >= before[$"inference_tokens_generated_total{{{model}}}"] + 3);
        Assert.True(after[$"inference_time_to_first_token_seconds_count{{{model}}}"] >= before[$"inference_time_to_first_token_seconds_count{{{model}}}"] + 1);
        Assert.True(after[$"inference_time_to_first_token_seconds_sum{{{model}}}"] > 0);
        Assert.True(after.Samples.ContainsKey($"inference_kv_blocks_free{{{model}}}"));

        // Histogram buckets are cumulative and end at the count: 16 bounds from 0.5 ms to 60 s, and +Inf.
        Assert.Equal(17, after.AssertBuckets("inference_inter_token_latency_seconds", model).Count);
    }

    private void AssertCard(JsonElement card)
    {
        Assert.Equal(fixture.Model.Name, card.GetProperty("id").GetString());
        Assert.Equal("model", card.GetProperty("object").GetString());
        Assert.Equal("inferenceserver", card.GetProperty("owned_by").GetString());
        Assert.True(card.GetProperty("created").GetInt64() > 1_600_000_000);
        Assert.Equal(fixture.Model.ContextLength, card.GetProperty("context_length").GetInt32());
    }

    [Fact]
    public async Task Health_is_ok_while_serving()
    {
        using var response = await _client.GetAsync("/health");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal("ok", (await HttpTest.ReadJsonAsync(response)).GetProperty("status").GetString());
    }
}
