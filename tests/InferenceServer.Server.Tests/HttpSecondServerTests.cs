using System.Net;
using System.Net.Http.Headers;

namespace InferenceServer.Server.Tests;

/// <summary>
/// Behaviour that needs other options or state than the fixture's: API keys, the serving states,
/// and a model without fill-in-the-middle tokens. Each test starts a second server over the
/// fixture's model (so its engine).
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class HttpSecondServerTests(ServerFixture fixture)
{
    private string CompletionBody => $"{{\"model\": \"{fixture.Model.Name}\", \"prompt\": \"hi\", \"max_tokens\": 2}}";

    [Fact]
    public async Task Api_keys_are_required_on_every_endpoint_but_health_and_metrics()
    {
        var state = new ServerState { State = ServingState.Serving };
        await using var server = await SecondServer.StartAsync(SecondServer.OptionsLike(fixture.Options) with { ApiKeys = ["secret", "other"] }, fixture.Model, state);
        var client = server.Client;

        using (var response = await client.GetAsync("/v1/models"))
        {
            await HttpTest.AssertErrorAsync(response, HttpStatusCode.Unauthorized, "invalid_api_key");
            Assert.Equal("Bearer", response.Headers.WwwAuthenticate.Single().Scheme);
        }
        using (var response = await client.PostAsync("/v1/completions", HttpTest.Json(CompletionBody)))
            await HttpTest.AssertErrorAsync(response, HttpStatusCode.Unauthorized, "invalid_api_key");
        using (var response = await client.PostAsync("/infill", HttpTest.Json("{}")))
            await HttpTest.AssertErrorAsync(response, HttpStatusCode.Unauthorized, "invalid_api_key");
        using (var response = await client.GetAsync("/nowhere"))
            await HttpTest.AssertErrorAsync(response, HttpStatusCode.Unauthorized, "invalid_api_key");

        foreach (var wrong in new[] { "Bearer secre", "Bearer secret2", "Basic secret", "secret", "Bearer " })
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, "/v1/models");
            request.Headers.TryAddWithoutValidation("Authorization", wrong);
            using var response = await client.SendAsync(request);
            await HttpTest.AssertErrorAsync(response, HttpStatusCode.Unauthorized, "invalid_api_key");
        }

        using (var health = await client.GetAsync("/health"))
            Assert.Equal(HttpStatusCode.OK, health.StatusCode);
        // Prometheus scrapes without a key.
        using (var metrics = await client.GetAsync("/metrics"))
            Assert.Equal(HttpStatusCode.OK, metrics.StatusCode);
        using (var engine = await client.GetAsync("/admin/engine"))
            await HttpTest.AssertErrorAsync(engine, HttpStatusCode.Unauthorized, "invalid_api_key");

        foreach (var key in new[] { "secret", "other" })
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = HttpTest.Json(CompletionBody) };
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
            using var response = await client.SendAsync(request);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }
        await fixture.AssertEngineIdleAsync();
    }

    [Fact]
    public async Task While_not_serving_health_is_503_and_every_endpoint_answers_503()
    {
        var state = new ServerState();
        await using var server = await SecondServer.StartAsync(SecondServer.OptionsLike(fixture.Options), fixture.Model, state);
        var client = server.Client;
        foreach (var (serving, name) in new[] { (ServingState.Loading, "loading"), (ServingState.Draining, "draining") })
        {
            state.State = serving;
            using (var health = await client.GetAsync("/health"))
            {
                Assert.Equal(HttpStatusCode.ServiceUnavailable, health.StatusCode);
                Assert.Equal(name, (await HttpTest.ReadJsonAsync(health)).GetProperty("status").GetString());
            }
            using (var response = await client.GetAsync("/v1/models"))
                await HttpTest.AssertErrorAsync(response, HttpStatusCode.ServiceUnavailable, "service_unavailable");
            using (var response = await client.PostAsync("/v1/completions", HttpTest.Json(CompletionBody)))
                await HttpTest.AssertErrorAsync(response, HttpStatusCode.ServiceUnavailable, "service_unavailable");
            using (var response = await client.PostAsync("/infill", HttpTest.Json("{}")))
                await HttpTest.AssertErrorAsync(response, HttpStatusCode.ServiceUnavailable, "service_unavailable");
        }
        state.State = ServingState.Serving;
        using (var health = await client.GetAsync("/health"))
            Assert.Equal(HttpStatusCode.OK, health.StatusCode);
        using (var response = await client.PostAsync("/v1/completions", HttpTest.Json(CompletionBody)))
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        await fixture.AssertEngineIdleAsync();
    }

    [Fact]
    public async Task A_model_without_fill_in_the_middle_rejects_a_suffix_and_infill()
    {
        // The fixture's folder and engine, seen through a tokenizer that has no FIM tokens.
        // Not disposed: that would stop the shared engine.
        var plain = new ServedModel("plain", fixture.Model.Folder, HttpTest.TokenizerWithoutFim(), fixture.Model.Engine, fixture.Model.MaxBatch);
        Assert.Null(plain.Fim);
        var state = new ServerState { State = ServingState.Serving };
        await using var server = await SecondServer.StartAsync(SecondServer.OptionsLike(fixture.Options), plain, state);
        var client = server.Client;

        using (var response = await client.PostAsync("/v1/completions", HttpTest.Json("{\"model\": \"plain\", \"prompt\": \"def f(\", \"suffix\": \")\\n\"}")))
        {
            var error = await HttpTest.AssertErrorAsync(response, HttpStatusCode.BadRequest);
            Assert.Contains("fill-in-the-middle", error.GetProperty("message").GetString(), StringComparison.Ordinal);
        }
        using (var response = await client.PostAsync("/infill", HttpTest.Json("{\"input_prefix\": \"def f(\", \"input_suffix\": \")\\n\"}")))
        {
            var error = await HttpTest.AssertErrorAsync(response, HttpStatusCode.BadRequest);
            Assert.Contains("fill-in-the-middle", error.GetProperty("message").GetString(), StringComparison.Ordinal);
        }
        // An empty suffix on such a model is an ordinary completion.
        using (var response = await client.PostAsync("/v1/completions", HttpTest.Json("{\"model\": \"plain\", \"prompt\": \"def f(\", \"suffix\": \"\", \"max_tokens\": 2}")))
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        await fixture.AssertEngineIdleAsync();
    }
}
