using System.Net;
using System.Text;
using System.Text.Json;

namespace InferenceServer.Server.Tests;

/// <summary>POST /v1/completions over real HTTP: whole and streamed, stops, usage, logprobs, fill in the middle.</summary>
[Collection(ServerCollection.Name)]
public sealed class HttpCompletionsTests(ServerFixture fixture) : IDisposable
{
    private readonly HttpClient _client = new() { BaseAddress = fixture.HttpAddress };

    private string Model => fixture.Model.Name;

    public void Dispose() => _client.Dispose();

    private string Body(string prompt, int maxTokens, string extra = "") =>
        $$"""{"model": {{JsonSerializer.Serialize(Model)}}, "prompt": {{JsonSerializer.Serialize(prompt)}}, "max_tokens": {{maxTokens}}, "temperature": 0, "seed": 7, "ignore_eos": true{{extra}}}""";

    [Fact]
    public async Task Model_may_be_left_out_and_the_served_model_answers()
    {
        var named = await HttpTest.PostOkAsync(_client, "/v1/completions", Body("x = ", 6));
        var unnamed = await HttpTest.PostOkAsync(_client, "/v1/completions",
            """{"prompt": "x = ", "max_tokens": 6, "temperature": 0, "seed": 7, "ignore_eos": true}""");
        Assert.Equal(Model, unnamed.GetProperty("model").GetString());
        Assert.Equal(
            named.GetProperty("choices")[0].GetProperty("text").GetString(),
            unnamed.GetProperty("choices")[0].GetProperty("text").GetString());
    }

    [Fact]
    public async Task Greedy_completion_is_the_same_whole_and_streamed()
    {
        var whole = await HttpTest.PostOkAsync(_client, "/v1/completions", Body("def fib(n):", 12));
        Assert.StartsWith("cmpl-", whole.GetProperty("id").GetString(), StringComparison.Ordinal);
        Assert.Equal("text_completion", whole.GetProperty("object").GetString());
        Assert.Equal(Model, whole.GetProperty("model").GetString());
        Assert.True(whole.GetProperty("created").GetInt64() > 1_600_000_000);
        var choice = Assert.Single(whole.GetProperty("choices").EnumerateArray());
        Assert.Equal(0, choice.GetProperty("index").GetInt32());
        Assert.Equal("length", choice.GetProperty("finish_reason").GetString());
        Assert.Equal(JsonValueKind.Null, choice.GetProperty("logprobs").ValueKind);
        var text = choice.GetProperty("text").GetString()!;

        var usage = whole.GetProperty("usage");
        Assert.Equal(Encoding.UTF8.GetByteCount("def fib(n):"), usage.GetProperty("prompt_tokens").GetInt32()); // one token per byte
        Assert.Equal(12, usage.GetProperty("completion_tokens").GetInt32());
        Assert.Equal(usage.GetProperty("prompt_tokens").GetInt32() + 12, usage.GetProperty("total_tokens").GetInt32());
        var cached = usage.GetProperty("prompt_tokens_details").GetProperty("cached_tokens").GetInt32();
        Assert.InRange(cached, 0, usage.GetProperty("prompt_tokens").GetInt32());

        using var response = await _client.PostAsync("/v1/completions", HttpTest.Json(Body("def fib(n):", 12, ", \"stream\": true")));
        var events = await HttpTest.ReadEventsAsync(response);
        Assert.Equal("[DONE]", events[^1]);
        var streamed = new StringBuilder();
        string? finish = null;
        string? id = null;
        foreach (var data in events.SkipLast(1))
        {
            using var chunk = JsonDocument.Parse(data);
            var root = chunk.RootElement;
            Assert.Equal("text_completion", root.GetProperty("object").GetString());
            id ??= root.GetProperty("id").GetString();
            Assert.Equal(id, root.GetProperty("id").GetString());
            var c = Assert.Single(root.GetProperty("choices").EnumerateArray());
            Assert.Null(finish); // nothing after the finish chunk but [DONE]
            streamed.Append(c.GetProperty("text").GetString());
            finish = c.GetProperty("finish_reason").GetString();
        }
        Assert.Equal("length", finish);
        Assert.Equal(text, streamed.ToString());
        await fixture.AssertEngineIdleAsync();
    }

    [Fact]
    public async Task Include_usage_adds_a_usage_chunk_without_choices()
    {
        using var response = await _client.PostAsync("/v1/completions",
            HttpTest.Json(Body("hello", 5, ", \"stream\": true, \"stream_options\": {\"include_usage\": true}")));
        var events = await HttpTest.ReadEventsAsync(response);
        Assert.Equal("[DONE]", events[^1]);
        using var usageChunk = JsonDocument.Parse(events[^2]);
        Assert.Empty(usageChunk.RootElement.GetProperty("choices").EnumerateArray());
        var usage = usageChunk.RootElement.GetProperty("usage");
        Assert.Equal(5, usage.GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(5, usage.GetProperty("completion_tokens").GetInt32());
        Assert.Equal(10, usage.GetProperty("total_tokens").GetInt32());
        using var finishChunk = JsonDocument.Parse(events[^3]);
        Assert.Equal("length", finishChunk.RootElement.GetProperty("choices")[0].GetProperty("finish_reason").GetString());
        Assert.Equal(JsonValueKind.Null, finishChunk.RootElement.GetProperty("usage").ValueKind);
        await fixture.AssertEngineIdleAsync();
    }

    [Fact]
    public async Task Default_max_tokens_applies_and_max_tokens_bounds_the_output()
    {
        var json = $$"""{"model": "{{Model}}", "prompt": "abc", "temperature": 0, "ignore_eos": true}""";
        var whole = await HttpTest.PostOkAsync(_client, "/v1/completions", json);
        Assert.Equal(fixture.Options.DefaultMaxTokens, whole.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        Assert.Equal("length", whole.GetProperty("choices")[0].GetProperty("finish_reason").GetString());
        await fixture.AssertEngineIdleAsync();
    }

    [Fact]
    public async Task A_stop_string_ends_with_stop_and_is_not_in_the_text()
    {
        var full = (await HttpTest.PostOkAsync(_client, "/v1/completions", Body("x = [", 24)))
            .GetProperty("choices")[0].GetProperty("text").GetString()!;
        // A two-character piece of what the model says, clear of replacement characters, as the stop string.
        var at = Enumerable.Range(2, full.Length - 3).First(i => full[i] != '\uFFFD' && full[i + 1] != '\uFFFD' && !char.IsSurrogate(full[i]) && !char.IsSurrogate(full[i + 1]));
        var stop = full.Substring(at, 2);
        var expected = full[..full.IndexOf(stop, StringComparison.Ordinal)];

        foreach (var stream in new[] { false, true })
        {
            var extra = $", \"stop\": [{JsonSerializer.Serialize(stop)}, \"never-said-stop\"]" + (stream ? ", \"stream\": true" : "");
            string text, finish;
            if (!stream)
            {
                var whole = await HttpTest.PostOkAsync(_client, "/v1/completions", Body("x = [", 24, extra));
                text = whole.GetProperty("choices")[0].GetProperty("text").GetString()!;
                finish = whole.GetProperty("choices")[0].GetProperty("finish_reason").GetString()!;
                Assert.True(whole.GetProperty("usage").GetProperty("completion_tokens").GetInt32() < 24);
            }
            else
            {
                using var response = await _client.PostAsync("/v1/completions", HttpTest.Json(Body("x = [", 24, extra)));
                var events = await HttpTest.ReadEventsAsync(response);
                var chunks = events.SkipLast(1).Select(e => JsonDocument.Parse(e).RootElement.GetProperty("choices")[0]).ToList();
                text = string.Concat(chunks.Select(c => c.GetProperty("text").GetString()));
                finish = chunks[^1].GetProperty("finish_reason").GetString()!;
            }
            Assert.Equal("stop", finish);
            Assert.Equal(expected, text);
            Assert.DoesNotContain(stop, text, StringComparison.Ordinal);
        }
        await fixture.AssertEngineIdleAsync();
    }

    [Fact]
    public async Task Token_id_prompts_and_single_element_arrays_are_accepted()
    {
        var text = (await HttpTest.PostOkAsync(_client, "/v1/completions", Body("hi", 4))).GetProperty("choices")[0].GetProperty("text").GetString();
        string[] prompts = ["[104, 105]", "[[104, 105]]", "[\"hi\"]"];
        foreach (var prompt in prompts)
        {
            var json = $$"""{"model": "{{Model}}", "prompt": {{prompt}}, "max_tokens": 4, "temperature": 0, "ignore_eos": true}""";
            var whole = await HttpTest.PostOkAsync(_client, "/v1/completions", json);
            Assert.Equal(text, whole.GetProperty("choices")[0].GetProperty("text").GetString());
            Assert.Equal(2, whole.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        }
        await fixture.AssertEngineIdleAsync();
    }

    [Fact]
    public async Task Logprobs_have_openai_shape()
    {
        var whole = await HttpTest.PostOkAsync(_client, "/v1/completions", Body("let", 6, ", \"logprobs\": 3"));
        var choice = whole.GetProperty("choices")[0];
        var text = choice.GetProperty("text").GetString()!;
        var logprobs = choice.GetProperty("logprobs");
        var tokens = logprobs.GetProperty("tokens").EnumerateArray().Select(t => t.GetString()!).ToList();
        var values = logprobs.GetProperty("token_logprobs").EnumerateArray().Select(v => v.GetSingle()).ToList();
        var tops = logprobs.GetProperty("top_logprobs").EnumerateArray().ToList();
        var offsets = logprobs.GetProperty("text_offset").EnumerateArray().Select(o => o.GetInt32()).ToList();
        Assert.Equal(6, tokens.Count);
        Assert.Equal(6, values.Count);
        Assert.Equal(6, tops.Count);
        Assert.Equal(6, offsets.Count);
        Assert.Equal(0, offsets[0]);
        for (var i = 0; i < 6; i++)
        {
            Assert.InRange(values[i], -9999f, 0f);
            var top = tops[i].EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetSingle());
            Assert.InRange(top.Count, 1, 4); // the 3 most likely, plus the chosen one when it is not among them
            Assert.True(top.ContainsKey(tokens[i]), $"top_logprobs[{i}] lacks the chosen token {tokens[i]}");
            // Greedy: the chosen token is the most likely one.
            Assert.Equal(top.Values.Max(), top[tokens[i]], 3);
            // Offsets point into the text: a token that is whole characters on its own (and does not
            // finish a character an earlier token began) starts with its own text there.
            Assert.InRange(offsets[i], i == 0 ? 0 : offsets[i - 1], text.Length);
            if (!tokens[i].StartsWith("bytes:", StringComparison.Ordinal) && (i == 0 || !tokens[i - 1].StartsWith("bytes:", StringComparison.Ordinal)))
                Assert.Equal(tokens[i], text.Substring(offsets[i], tokens[i].Length));
        }

        // logprobs 0: the chosen token's logprob only.
        var zero = await HttpTest.PostOkAsync(_client, "/v1/completions", Body("let", 3, ", \"logprobs\": 0"));
        foreach (var top in zero.GetProperty("choices")[0].GetProperty("logprobs").GetProperty("top_logprobs").EnumerateArray())
            Assert.Single(top.EnumerateObject());

        // Streamed: the same tokens, spread over the chunks, offsets continuing.
        using var response = await _client.PostAsync("/v1/completions", HttpTest.Json(Body("let", 6, ", \"logprobs\": 3, \"stream\": true")));
        var events = await HttpTest.ReadEventsAsync(response);
        var streamedTokens = new List<string>();
        var streamedOffsets = new List<int>();
        foreach (var data in events.SkipLast(1))
        {
            using var chunk = JsonDocument.Parse(data);
            var lp = chunk.RootElement.GetProperty("choices")[0].GetProperty("logprobs");
            if (lp.ValueKind == JsonValueKind.Null)
                continue;
            streamedTokens.AddRange(lp.GetProperty("tokens").EnumerateArray().Select(t => t.GetString()!));
            streamedOffsets.AddRange(lp.GetProperty("text_offset").EnumerateArray().Select(o => o.GetInt32()));
        }
        Assert.Equal(tokens, streamedTokens);
        Assert.Equal(offsets, streamedOffsets);
        await fixture.AssertEngineIdleAsync();
    }

    [Fact]
    public async Task Suffix_makes_a_fill_in_the_middle_prompt()
    {
        const string prefix = "def add(a, b):\n    return ";
        const string suffix = "\n\nprint(add(1, 2))\n";
        var extra = $", \"suffix\": {JsonSerializer.Serialize(suffix)}";
        var whole = await HttpTest.PostOkAsync(_client, "/v1/completions", Body(prefix, 5, extra));
        // <fim_prefix> prefix <fim_suffix> suffix <fim_middle>: one token per byte plus the three markers.
        Assert.Equal(Encoding.UTF8.GetByteCount(prefix) + Encoding.UTF8.GetByteCount(suffix) + 3,
            whole.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(5, whole.GetProperty("usage").GetProperty("completion_tokens").GetInt32());

        // The same tokens as that prompt given as ids.
        var ids = new List<int> { ServerFixture.FimPrefix };
        ids.AddRange(Encoding.UTF8.GetBytes(prefix).Select(b => (int)b));
        ids.Add(ServerFixture.FimSuffix);
        ids.AddRange(Encoding.UTF8.GetBytes(suffix).Select(b => (int)b));
        ids.Add(ServerFixture.FimMiddle);
        var json = $$"""{"model": "{{Model}}", "prompt": [{{string.Join(", ", ids)}}], "max_tokens": 5, "temperature": 0, "ignore_eos": true}""";
        var byIds = await HttpTest.PostOkAsync(_client, "/v1/completions", json);
        Assert.Equal(whole.GetProperty("choices")[0].GetProperty("text").GetString(), byIds.GetProperty("choices")[0].GetProperty("text").GetString());

        // A suffix needs a text prompt.
        var bad = $$"""{"model": "{{Model}}", "prompt": [1, 2], "suffix": "x"}""";
        using var response = await _client.PostAsync("/v1/completions", HttpTest.Json(bad));
        await HttpTest.AssertErrorAsync(response, HttpStatusCode.BadRequest, param: "suffix");
        await fixture.AssertEngineIdleAsync();
    }

    [Fact]
    public async Task Token_healing_takes_the_last_prompt_token_back_and_spells_it_again()
    {
        var plain = await HttpTest.PostOkAsync(_client, "/v1/completions", Body("x = ", 6));
        var healed = await HttpTest.PostOkAsync(_client, "/v1/completions", Body("x = ", 6, ", \"token_healing\": true"));

        // One token per byte: the trailing space is taken back, generated again (the only token that
        // spells it) and not output; it does not count toward max_tokens.
        Assert.Equal(4, plain.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(3, healed.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(7, healed.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        Assert.Equal(plain.GetProperty("choices")[0].GetProperty("text").GetString(), healed.GetProperty("choices")[0].GetProperty("text").GetString());

        using var bad = await _client.PostAsync("/v1/completions", HttpTest.Json(Body("x = ", 6, ", \"token_healing\": \"yes\"")));
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        await fixture.AssertEngineIdleAsync();
    }
}
