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
        var before = await ScrapeAsync();
        using (var completion = await _client.PostAsync("/v1/completions", HttpTest.Json("{\"prompt\": \"def f(x):\", \"max_tokens\": 3, \"temperature\": 0, \"ignore_eos\": true}")))
            Assert.Equal(HttpStatusCode.OK, completion.StatusCode);
        var after = await ScrapeAsync();

        // Other tests share this server: counts only grow, by at least this request's.
        Assert.True(after["inference_requests_total"] >= before["inference_requests_total"] + 1);
        Assert.True(after["inference_tokens_generated_total"] >= before["inference_tokens_generated_total"] + 3);
        Assert.True(after["inference_time_to_first_token_seconds_count"] >= before["inference_time_to_first_token_seconds_count"] + 1);
        Assert.True(after["inference_time_to_first_token_seconds_sum"] > 0);
        Assert.True(after.ContainsKey("inference_kv_blocks_free"));

        // Histogram buckets are cumulative and end at the count.
        var buckets = after.Where(p => p.Key.StartsWith("inference_inter_token_latency_seconds_bucket", StringComparison.Ordinal)).Select(p => p.Value).ToList();
        Assert.Equal(17, buckets.Count);
        Assert.Equal(buckets.Order(), buckets);
        Assert.Equal(after["inference_inter_token_latency_seconds_count"], buckets[^1]);
    }

    /// <summary>GET /metrics, every sample line as name (with labels) and value.</summary>
    private async Task<Dictionary<string, double>> ScrapeAsync()
    {
        using var response = await _client.GetAsync("/metrics");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/plain; version=0.0.4; charset=utf-8", response.Content.Headers.ContentType!.ToString());
        var text = await response.Content.ReadAsStringAsync();
        Assert.Contains("# TYPE inference_requests_total counter\n", text, StringComparison.Ordinal);
        Assert.Contains("# TYPE inference_time_to_first_token_seconds histogram\n", text, StringComparison.Ordinal);
        return text.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Where(line => !line.StartsWith('#'))
            .Select(line => line.Split(' '))
            .ToDictionary(parts => parts[0], parts => double.Parse(parts[1], System.Globalization.CultureInfo.InvariantCulture));
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
