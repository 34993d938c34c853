using System.Net;
using System.Text.Json;

namespace InferenceServer.Server.Tests;

/// <summary>GET /v1/models, /v1/models/{id} and /health.</summary>
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
