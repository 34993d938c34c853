using System.Net;
using System.Net.Http.Headers;
using System.Text;

namespace InferenceServer.Server.Tests;

/// <summary>Malformed and unsupported requests: the right status, an OpenAI error body, and a server that keeps serving.</summary>
[Collection(ServerCollection.Name)]
public sealed class HttpErrorTests(ServerFixture fixture) : IDisposable
{
    private readonly HttpClient _client = new() { BaseAddress = fixture.HttpAddress };

    private string Model => fixture.Model.Name;

    public void Dispose() => _client.Dispose();

    public static TheoryData<string, string, int, string?, string?> BadBodies => new()
    {
        // name, body, status, code, param
        { "invalid JSON", "{\"model\": \"tiny-coder\", \"prompt\": ", 400, "invalid_json", null },
        { "empty body", "", 400, "invalid_json", null },
        { "JSON null", "null", 400, "invalid_json", null },
        { "wrong field type", "{\"model\": \"tiny-coder\", \"prompt\": \"a\", \"max_tokens\": \"ten\"}", 400, "invalid_json", null },
        { "negative max_tokens", "{\"model\": \"tiny-coder\", \"prompt\": \"a\", \"max_tokens\": -3}", 400, null, "max_tokens" },
        { "n=2", "{\"model\": \"tiny-coder\", \"prompt\": \"a\", \"n\": 2}", 400, null, "n" },
        { "echo", "{\"model\": \"tiny-coder\", \"prompt\": \"a\", \"echo\": true}", 400, null, "echo" },
        { "best_of", "{\"model\": \"tiny-coder\", \"prompt\": \"a\", \"best_of\": 3}", 400, null, "best_of" },
        { "logprobs too many", "{\"model\": \"tiny-coder\", \"prompt\": \"a\", \"logprobs\": 6}", 400, null, "logprobs" },
        { "two prompts", "{\"model\": \"tiny-coder\", \"prompt\": [\"a\", \"b\"]}", 400, null, "prompt" },
        { "empty prompt array", "{\"model\": \"tiny-coder\", \"prompt\": []}", 400, null, "prompt" },
        { "no prompt", "{\"model\": \"tiny-coder\"}", 400, null, "prompt" },
        { "empty prompt", "{\"model\": \"tiny-coder\", \"prompt\": \"\"}", 400, null, "prompt" },
        { "prompt of objects", "{\"model\": \"tiny-coder\", \"prompt\": [{}]}", 400, null, "prompt" },
        { "token id outside the vocabulary", "{\"model\": \"tiny-coder\", \"prompt\": [1, 99999]}", 400, null, null },
        { "seventeen stops", "{\"model\": \"tiny-coder\", \"prompt\": \"a\", \"stop\": [\"1\", \"2\", \"3\", \"4\", \"5\", \"6\", \"7\", \"8\", \"9\", \"10\", \"11\", \"12\", \"13\", \"14\", \"15\", \"16\", \"17\"]}", 400, null, "stop" },
        { "stop number", "{\"model\": \"tiny-coder\", \"prompt\": \"a\", \"stop\": 5}", 400, null, "stop" },
        { "empty stop", "{\"model\": \"tiny-coder\", \"prompt\": \"a\", \"stop\": \"\"}", 400, null, "stop" },
        { "temperature out of range", "{\"model\": \"tiny-coder\", \"prompt\": \"a\", \"temperature\": 101}", 400, null, "temperature" },
        { "top_p zero", "{\"model\": \"tiny-coder\", \"prompt\": \"a\", \"top_p\": 0}", 400, null, "top_p" },
        { "longer than the context", "{\"model\": \"tiny-coder\", \"prompt\": \"a\", \"max_tokens\": 100000}", 400, null, null },
        { "unknown model", "{\"model\": \"gpt-4\", \"prompt\": \"a\"}", 404, "model_not_found", "model" },
    };

    [Theory]
    [MemberData(nameof(BadBodies))]
    public async Task Bad_completion_requests_get_an_error_body_and_the_server_keeps_serving(string name, string body, int status, string? code, string? param)
    {
        Assert.Equal("tiny-coder", Model); // the bodies above name the fixture's model
        using (var response = await _client.PostAsync("/v1/completions", HttpTest.Json(body)))
        {
            var error = await HttpTest.AssertErrorAsync(response, (HttpStatusCode)status, code, param);
            Assert.Equal("invalid_request_error", error.GetProperty("type").GetString());
        }
        await AssertStillServingAsync(name);
    }

    [Fact]
    public async Task Wrong_content_type_is_415()
    {
        using (var response = await _client.PostAsync("/v1/completions", new StringContent($"{{\"model\": \"{Model}\", \"prompt\": \"a\"}}", Encoding.UTF8, "text/plain")))
            await HttpTest.AssertErrorAsync(response, HttpStatusCode.UnsupportedMediaType, "unsupported_media_type");
        using (var content = new ByteArrayContent(Encoding.UTF8.GetBytes($"{{\"model\": \"{Model}\", \"prompt\": \"a\"}}")))
        using (var response = await _client.PostAsync("/infill", content))
            await HttpTest.AssertErrorAsync(response, HttpStatusCode.UnsupportedMediaType, "unsupported_media_type");
        await AssertStillServingAsync("415");
    }

    [Fact]
    public async Task Oversized_bodies_are_413_with_or_without_a_content_length()
    {
        var prompt = new string('a', (int)fixture.Options.MaxRequestBodyBytes);
        var json = $"{{\"model\": \"{Model}\", \"prompt\": \"{prompt}\"}}";
        // Expect: 100-continue, as clients do for large bodies: the server answers before the body is
        // sent (announced length) or while it is read (chunked), and the client does not race it
        // writing a body the server has stopped reading.
        using (var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = HttpTest.Json(json) })
        {
            request.Headers.ExpectContinue = true;
            using var response = await _client.SendAsync(request);
            await HttpTest.AssertErrorAsync(response, HttpStatusCode.RequestEntityTooLarge, "request_too_large");
        }

        // Chunked: the limit trips while reading.
        using (var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = new StreamContent(new NonSeekableStream(Encoding.UTF8.GetBytes(json))) })
        {
            request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
            request.Headers.ExpectContinue = true;
            using var response = await _client.SendAsync(request);
            Assert.Null(request.Content.Headers.ContentLength);
            await HttpTest.AssertErrorAsync(response, HttpStatusCode.RequestEntityTooLarge, "request_too_large");
        }
        await AssertStillServingAsync("413");
    }

    [Fact]
    public async Task Unknown_routes_and_methods_get_error_bodies()
    {
        using (var response = await _client.GetAsync("/v1/nothing-here"))
            await HttpTest.AssertErrorAsync(response, HttpStatusCode.NotFound, "not_found");
        using (var response = await _client.PostAsync("/v1/embeddings", HttpTest.Json("{}")))
            await HttpTest.AssertErrorAsync(response, HttpStatusCode.NotFound, "not_found");
        using (var response = await _client.GetAsync("/v1/completions"))
            await HttpTest.AssertErrorAsync(response, HttpStatusCode.MethodNotAllowed, "method_not_allowed");
        using (var response = await _client.GetAsync("/v1/models/not-a-model"))
            await HttpTest.AssertErrorAsync(response, HttpStatusCode.NotFound, "model_not_found");
        await AssertStillServingAsync("404");
    }

    [Fact]
    public async Task Error_bodies_write_quotes_and_text_as_themselves()
    {
        using var response = await _client.PostAsync("/v1/completions", HttpTest.Json("{\"model\": \"<gpt> \\\"4\\\" é\", \"prompt\": \"a\"}"));
        var raw = await response.Content.ReadAsStringAsync();
        // Valid JSON whose message names the model as sent: quotes escaped the short way, the rest as is.
        Assert.Contains("The model '<gpt> \\\"4\\\" é' does not exist", raw, StringComparison.Ordinal);
        Assert.DoesNotContain("\\u00", raw, StringComparison.Ordinal);
        await HttpTest.AssertErrorAsync(response, HttpStatusCode.NotFound, "model_not_found");
    }

    private Task AssertStillServingAsync(string after) => HttpTest.AssertStillServingAsync(_client, fixture, after);

    /// <summary>Hides the length, so HttpClient sends the body chunked.</summary>
    private sealed class NonSeekableStream(byte[] data) : MemoryStream(data)
    {
        public override bool CanSeek => false;
    }
}
