using System.Net;
using System.Text;
using System.Text.Json;

namespace InferenceServer.Server.Tests;

/// <summary>POST /infill, llama.cpp's fill-in-the-middle endpoint, whole and streamed.</summary>
[Collection(ServerCollection.Name)]
public sealed class HttpInfillTests(ServerFixture fixture) : IDisposable
{
    private const string Prefix = "def add(a, b):\n    return ";
    private const string Suffix = "\n\nprint(add(1, 2))\n";

    private readonly HttpClient _client = new() { BaseAddress = fixture.HttpAddress };

    public void Dispose() => _client.Dispose();

    private static string Body(string extra = "", int nPredict = 6) =>
        $$"""{"input_prefix": {{JsonSerializer.Serialize(Prefix)}}, "input_suffix": {{JsonSerializer.Serialize(Suffix)}}, "n_predict": {{nPredict}}, "temperature": 0, "ignore_eos": true{{extra}}}""";

    private static int Bytes(string s) => Encoding.UTF8.GetByteCount(s);

    [Fact]
    public async Task Infill_matches_an_openai_completion_with_suffix()
    {
        var infill = await HttpTest.PostOkAsync(_client, "/infill", Body());
        Assert.True(infill.GetProperty("stop").GetBoolean());
        Assert.Equal(6, infill.GetProperty("tokens_predicted").GetInt32());
        Assert.Equal(Bytes(Prefix) + Bytes(Suffix) + 3, infill.GetProperty("tokens_evaluated").GetInt32());
        Assert.Equal("limit", infill.GetProperty("stop_type").GetString());
        Assert.False(infill.GetProperty("truncated").GetBoolean());
        Assert.Equal(fixture.Model.Name, infill.GetProperty("model").GetString());
        var timings = infill.GetProperty("timings");
        Assert.Equal(6, timings.GetProperty("predicted_n").GetInt32());
        Assert.True(timings.GetProperty("predicted_ms").GetDouble() >= 0);
        Assert.True(timings.GetProperty("prompt_ms").GetDouble() >= 0);
        Assert.InRange(timings.GetProperty("prompt_n").GetInt32(), 0, Bytes(Prefix) + Bytes(Suffix) + 3);
        Assert.Equal(6, infill.GetProperty("tokens").GetArrayLength());

        var completion = await HttpTest.PostOkAsync(_client, "/v1/completions",
            $$"""{"model": "{{fixture.Model.Name}}", "prompt": {{JsonSerializer.Serialize(Prefix)}}, "suffix": {{JsonSerializer.Serialize(Suffix)}}, "max_tokens": 6, "temperature": 0, "ignore_eos": true}""");
        Assert.Equal(completion.GetProperty("choices")[0].GetProperty("text").GetString(), infill.GetProperty("content").GetString());
        await fixture.AssertEngineIdleAsync();
    }

    [Fact]
    public async Task Streamed_infill_sends_content_events_then_the_final_result()
    {
        var whole = (await HttpTest.PostOkAsync(_client, "/infill", Body())).GetProperty("content").GetString();
        using var response = await _client.PostAsync("/infill", HttpTest.Json(Body(", \"stream\": true")));
        var events = await HttpTest.ReadEventsAsync(response);
        Assert.DoesNotContain("[DONE]", events); // llama.cpp's native endpoints end without it
        var content = new StringBuilder();
        for (var i = 0; i < events.Count; i++)
        {
            using var doc = JsonDocument.Parse(events[i]);
            var e = doc.RootElement;
            var last = i == events.Count - 1;
            Assert.Equal(last, e.GetProperty("stop").GetBoolean());
            content.Append(e.GetProperty("content").GetString());
            if (last)
            {
                Assert.Equal("", e.GetProperty("content").GetString());
                Assert.Equal(6, e.GetProperty("tokens_predicted").GetInt32());
                Assert.Equal("limit", e.GetProperty("stop_type").GetString());
                Assert.True(e.TryGetProperty("timings", out _));
            }
        }
        Assert.Equal(whole, content.ToString());
        await fixture.AssertEngineIdleAsync();
    }

    [Fact]
    public async Task Input_extra_and_prompt_are_part_of_the_prompt()
    {
        const string middle = "a +";
        // Without token healing, which would take the prompt's last token back.
        var extra = ", \"token_healing\": false, \"prompt\": \"a +\", \"input_extra\": [{\"filename\": \"util.py\", \"text\": \"def sub(a, b):\\n    return a - b\"}, {\"text\": \"# notes\"}]";
        var infill = await HttpTest.PostOkAsync(_client, "/infill", Body(extra));
        var extraText = "util.py\ndef sub(a, b):\n    return a - b\n" + "# notes\n";
        Assert.Equal(Bytes(extraText) + Bytes(Prefix) + Bytes(Suffix) + Bytes(middle) + 3, infill.GetProperty("tokens_evaluated").GetInt32());

        // The same prompt as token ids: <fim_prefix> extra+prefix <fim_suffix> suffix <fim_middle> prompt.
        var ids = new List<int> { ServerFixture.FimPrefix };
        ids.AddRange(Encoding.UTF8.GetBytes(extraText + Prefix).Select(b => (int)b));
        ids.Add(ServerFixture.FimSuffix);
        ids.AddRange(Encoding.UTF8.GetBytes(Suffix).Select(b => (int)b));
        ids.Add(ServerFixture.FimMiddle);
        ids.AddRange(Encoding.UTF8.GetBytes(middle).Select(b => (int)b));
        var byIds = await HttpTest.PostOkAsync(_client, "/v1/completions",
            $$"""{"model": "{{fixture.Model.Name}}", "prompt": [{{string.Join(", ", ids)}}], "max_tokens": 6, "temperature": 0, "ignore_eos": true}""");
        Assert.Equal(byIds.GetProperty("choices")[0].GetProperty("text").GetString(), infill.GetProperty("content").GetString());

        // By default the prompt's end ("+") is healed: taken back, so one token fewer is evaluated.
        var healed = await HttpTest.PostOkAsync(_client, "/infill", Body(extra.Replace("\"token_healing\": false, ", "", StringComparison.Ordinal)));
        Assert.Equal(infill.GetProperty("tokens_evaluated").GetInt32() - 1, healed.GetProperty("tokens_evaluated").GetInt32());
        await fixture.AssertEngineIdleAsync();
    }

    [Fact]
    public async Task Extra_context_that_does_not_fit_is_dropped_oldest_first()
    {
        var big = new string('x', fixture.Model.ContextLength); // alone more than the context
        var extra = $", \"input_extra\": [{{\"filename\": \"big.txt\", \"text\": \"{big}\"}}, {{\"filename\": \"a.py\", \"text\": \"pass\"}}]";
        var infill = await HttpTest.PostOkAsync(_client, "/infill", Body(extra));
        Assert.True(infill.GetProperty("truncated").GetBoolean());
        Assert.Equal(Bytes("a.py\npass\n") + Bytes(Prefix) + Bytes(Suffix) + 3, infill.GetProperty("tokens_evaluated").GetInt32());
        await fixture.AssertEngineIdleAsync();
    }

    [Fact]
    public async Task Unbounded_n_predict_runs_to_the_end_of_the_context_and_zero_predicts_nothing()
    {
        var infill = await HttpTest.PostOkAsync(_client, "/infill", Body(nPredict: -1));
        var evaluated = infill.GetProperty("tokens_evaluated").GetInt32();
        Assert.Equal(fixture.Model.ContextLength - evaluated, infill.GetProperty("tokens_predicted").GetInt32());
        Assert.Equal("limit", infill.GetProperty("stop_type").GetString());

        var none = await HttpTest.PostOkAsync(_client, "/infill", Body(nPredict: 0));
        Assert.Equal("", none.GetProperty("content").GetString());
        Assert.Equal(0, none.GetProperty("tokens_predicted").GetInt32());
        await fixture.AssertEngineIdleAsync();
    }

    [Fact]
    public async Task Bad_infill_requests_get_error_bodies()
    {
        using var badType = await _client.PostAsync("/infill", HttpTest.Json("{\"input_prefix\": 5}"));
        await HttpTest.AssertErrorAsync(badType, HttpStatusCode.BadRequest, code: "invalid_json");
        using var badTemperature = await _client.PostAsync("/infill", HttpTest.Json("{\"input_prefix\": \"a\", \"input_suffix\": \"b\", \"temperature\": -1}"));
        await HttpTest.AssertErrorAsync(badTemperature, HttpStatusCode.BadRequest, param: "temperature");
        await fixture.AssertEngineIdleAsync();
    }
}
