using System.Net;
using System.Text;
using System.Text.Json;
using InferenceServer.Engine;
using InferenceServer.Tokenizer.ChatTemplates;

namespace InferenceServer.Server.Tests;

/// <summary>POST /v1/chat/completions over real HTTP: the chat template's prompt, whole and streamed answers, errors.</summary>
[Collection(ServerCollection.Name)]
public sealed class HttpChatCompletionsTests(ServerFixture fixture) : IDisposable
{
    private readonly HttpClient _client = new() { BaseAddress = fixture.HttpAddress };

    public void Dispose() => _client.Dispose();

    private const string Messages = """[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]""";

    private string Body(string messages, int maxTokens, string extra = "") =>
        $$"""{"model": {{JsonSerializer.Serialize(fixture.Model.Name)}}, "messages": {{messages}}, "max_tokens": {{maxTokens}}, "temperature": 0, "seed": 7, "ignore_eos": true{{extra}}}""";

    /// <summary>What the fixture's template makes of <see cref="Messages"/>, tokenized as the endpoint must.</summary>
    private int[] ExpectedPrompt()
    {
        var text = "<|im_start|>system\nBe brief.<|endoftext|>\n<|im_start|>user\nHello<|endoftext|>\n<|im_start|>assistant\n";
        var ids = fixture.Model.Tokenizer.Encode(text, addSpecialTokens: false, parseSpecialTokens: true);
        Assert.Equal(2, ids.Count(id => id == ServerFixture.EndOfText)); // the eos token's text became the special token
        return ids;
    }

    [Fact]
    public async Task A_chat_answer_has_the_assistant_message_finish_reason_and_usage()
    {
        var whole = await HttpTest.PostOkAsync(_client, "/v1/chat/completions", Body(Messages, 8));
        Assert.StartsWith("chatcmpl-", whole.GetProperty("id").GetString(), StringComparison.Ordinal);
        Assert.Equal("chat.completion", whole.GetProperty("object").GetString());
        Assert.Equal(fixture.Model.Name, whole.GetProperty("model").GetString());
        var choice = Assert.Single(whole.GetProperty("choices").EnumerateArray());
        Assert.Equal(0, choice.GetProperty("index").GetInt32());
        Assert.Equal("assistant", choice.GetProperty("message").GetProperty("role").GetString());
        Assert.Equal(JsonValueKind.String, choice.GetProperty("message").GetProperty("content").ValueKind);
        Assert.Equal("length", choice.GetProperty("finish_reason").GetString());
        Assert.Equal(JsonValueKind.Null, choice.GetProperty("logprobs").ValueKind);
        var usage = whole.GetProperty("usage");
        Assert.Equal(ExpectedPrompt().Length, usage.GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(8, usage.GetProperty("completion_tokens").GetInt32());
        Assert.Equal(usage.GetProperty("prompt_tokens").GetInt32() + 8, usage.GetProperty("total_tokens").GetInt32());

        // The same prompt through /v1/completions as token ids gives the same greedy text.
        var ids = JsonSerializer.Serialize(ExpectedPrompt());
        var completion = await HttpTest.PostOkAsync(_client, "/v1/completions",
            $$"""{"prompt": {{ids}}, "max_tokens": 8, "temperature": 0, "seed": 7, "ignore_eos": true}""");
        Assert.Equal(completion.GetProperty("choices")[0].GetProperty("text").GetString(), choice.GetProperty("message").GetProperty("content").GetString());
        await fixture.AssertEngineIdleAsync();
    }

    [Fact]
    public async Task A_streamed_chat_answer_is_role_then_deltas_then_finish_then_usage_then_done()
    {
        var whole = await HttpTest.PostOkAsync(_client, "/v1/chat/completions", Body(Messages, 10, ", \"max_completion_tokens\": 6"));
        Assert.Equal(6, whole.GetProperty("usage").GetProperty("completion_tokens").GetInt32()); // max_completion_tokens wins

        using var response = await _client.PostAsync("/v1/chat/completions",
            HttpTest.Json(Body(Messages, 6, ", \"stream\": true, \"stream_options\": {\"include_usage\": true}")));
        var events = await HttpTest.ReadEventsAsync(response);
        Assert.Equal("[DONE]", events[^1]);
        var chunks = events.SkipLast(1).Select(e => JsonDocument.Parse(e).RootElement.Clone()).ToList();
        Assert.All(chunks, c => Assert.Equal("chat.completion.chunk", c.GetProperty("object").GetString()));
        Assert.Single(chunks.Select(c => c.GetProperty("id").GetString()).Distinct());

        var usageChunk = chunks[^1];
        Assert.Empty(usageChunk.GetProperty("choices").EnumerateArray());
        Assert.Equal(6, usageChunk.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        Assert.Equal(ExpectedPrompt().Length, usageChunk.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());

        var finish = chunks[^2].GetProperty("choices")[0];
        Assert.Equal("length", finish.GetProperty("finish_reason").GetString());
        Assert.Empty(finish.GetProperty("delta").EnumerateObject());

        var deltas = chunks.SkipLast(2).Select(c => c.GetProperty("choices")[0]).ToList();
        Assert.Equal("assistant", deltas[0].GetProperty("delta").GetProperty("role").GetString());
        Assert.All(deltas.Skip(1), d => Assert.False(d.GetProperty("delta").TryGetProperty("role", out _)));
        Assert.All(deltas, d => Assert.Equal(JsonValueKind.Null, d.GetProperty("finish_reason").ValueKind));
        var streamed = new StringBuilder();
        foreach (var d in deltas)
            streamed.Append(d.GetProperty("delta").GetProperty("content").GetString());
        Assert.Equal(whole.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString(), streamed.ToString());
        await fixture.AssertEngineIdleAsync();
    }

    [Fact]
    public async Task Content_parts_are_joined_and_logprobs_come_in_the_chat_shape()
    {
        const string parts = """[{"role": "system", "content": [{"type": "text", "text": "Be brief."}]}, {"role": "user", "content": [{"type": "text", "text": "Hello"}]}]""";
        var answer = await HttpTest.PostOkAsync(_client, "/v1/chat/completions", Body(parts, 3, ", \"logprobs\": true, \"top_logprobs\": 2"));
        Assert.Equal(ExpectedPrompt().Length, answer.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        var content = answer.GetProperty("choices")[0].GetProperty("logprobs").GetProperty("content");
        Assert.Equal(3, content.GetArrayLength());
        foreach (var token in content.EnumerateArray())
        {
            Assert.Equal(JsonValueKind.String, token.GetProperty("token").ValueKind);
            Assert.True(token.GetProperty("logprob").GetSingle() <= 0);
            Assert.Equal(2, token.GetProperty("top_logprobs").GetArrayLength());
        }
        await fixture.AssertEngineIdleAsync();
    }

    [Theory]
    [InlineData("""{"max_tokens": 2}""", "messages")]
    [InlineData("""{"messages": [], "max_tokens": 2}""", "messages")]
    [InlineData("""{"messages": "hi", "max_tokens": 2}""", "messages")]
    [InlineData("""{"messages": ["hi"], "max_tokens": 2}""", "messages[0]")]
    [InlineData("""{"messages": [{"content": "hi"}], "max_tokens": 2}""", "messages[0].role")]
    [InlineData("""{"messages": [{"role": "user", "content": "a"}, {"role": "wizard", "content": "hi"}], "max_tokens": 2}""", "messages[1].role")]
    [InlineData("""{"messages": [{"role": 3, "content": "hi"}], "max_tokens": 2}""", "messages[0].role")]
    [InlineData("""{"messages": [{"role": "user"}], "max_tokens": 2}""", "messages[0].content")]
    [InlineData("""{"messages": [{"role": "user", "content": 42}], "max_tokens": 2}""", "messages[0].content")]
    [InlineData("""{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], "max_tokens": 2}""", "messages[0].content[0].type")]
    [InlineData("""{"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}], "max_tokens": 2}""", "messages[0].content[0].text")]
    [InlineData("""{"messages": [{"role": "user", "content": "hi"}], "n": 2}""", "n")]
    [InlineData("""{"messages": [{"role": "user", "content": "hi"}], "logprobs": true, "top_logprobs": 9}""", "top_logprobs")]
    [InlineData("""{"messages": [{"role": "user", "content": "hi"}], "temperature": -1}""", "temperature")]
    public async Task Bad_requests_are_400_naming_the_field(string body, string param)
    {
        using var response = await _client.PostAsync("/v1/chat/completions", HttpTest.Json(body));
        var error = await HttpTest.AssertErrorAsync(response, HttpStatusCode.BadRequest, param: param);
        Assert.Equal("invalid_request_error", error.GetProperty("type").GetString());
        await fixture.AssertEngineIdleAsync();
    }

    [Fact]
    public async Task A_model_without_a_chat_template_answers_400_chat_template_missing()
    {
        var decoder = new SlowDecoder(1, fixture.Model.ContextLength, ServerFixture.VocabSize, 'a', TimeSpan.FromMilliseconds(1));
        var engine = new InferenceEngine(decoder, fixture.Model.Tokenizer, new EngineOptions { EosTokenIds = [ServerFixture.EndOfText] });
        var model = new ServedModel("plain", fixture.Model.Folder, fixture.Model.Tokenizer, engine, 1, chat: ChatTemplateConfig.None);
        try
        {
            await using var server = await SecondServer.StartAsync(SecondServer.OptionsLike(fixture.Options), model, new ServerState { State = ServingState.Serving });
            using var response = await server.Client.PostAsync("/v1/chat/completions", HttpTest.Json("""{"messages": [{"role": "user", "content": "hi"}]}"""));
            var error = await HttpTest.AssertErrorAsync(response, HttpStatusCode.BadRequest, "chat_template_missing", "messages");
            Assert.Contains("no chat template", error.GetProperty("message").GetString(), StringComparison.Ordinal);
        }
        finally
        {
            await model.DisposeAsync();
        }
    }

    [Fact]
    public async Task A_template_that_raises_answers_400_with_its_message()
    {
        var decoder = new SlowDecoder(1, fixture.Model.ContextLength, ServerFixture.VocabSize, 'a', TimeSpan.FromMilliseconds(1));
        var engine = new InferenceEngine(decoder, fixture.Model.Tokenizer, new EngineOptions { EosTokenIds = [ServerFixture.EndOfText] });
        using var config = JsonDocument.Parse("""{"chat_template": "{% if messages[0].role != 'user' %}{{ raise_exception('the first message must be from the user') }}{% endif %}{{ messages[0].content }}"}""");
        var model = new ServedModel("strict", fixture.Model.Folder, fixture.Model.Tokenizer, engine, 1, chat: ChatTemplateConfig.FromJson(config.RootElement));
        try
        {
            await using var server = await SecondServer.StartAsync(SecondServer.OptionsLike(fixture.Options), model, new ServerState { State = ServingState.Serving });
            using var response = await server.Client.PostAsync("/v1/chat/completions", HttpTest.Json("""{"messages": [{"role": "assistant", "content": "hi"}]}"""));
            var error = await HttpTest.AssertErrorAsync(response, HttpStatusCode.BadRequest, "chat_template_error", "messages");
            Assert.Equal("the first message must be from the user", error.GetProperty("message").GetString());
            var ok = await HttpTest.PostOkAsync(server.Client, "/v1/chat/completions", """{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}""");
            Assert.Equal(2, ok.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
            await ServerFixture.AssertIdleAsync(engine);
        }
        finally
        {
            await model.DisposeAsync();
        }
    }
}
