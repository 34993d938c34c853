using System.Net;
using System.Text;
using System.Text.Json;
using InferenceServer.Engine;
using InferenceServer.Model;
using InferenceServer.Tests;

namespace InferenceServer.Server.Tests;

/// <summary>
/// Replays of the requests editor plugins send, with the fields each reads from the answer. The
/// bodies follow the plugins' sources at these versions:
///   - llama.vscode 0.0.63 (ggml-org/llama.vscode 3938fb3568b98e3ddfcf2ce3dd52d9570552b579):
///     src/llama-server.ts createRequestPayload (the completion and the n_predict 0 warm-up),
///     src/completion.ts (local context: 256 prefix lines, 64 suffix lines, n_indent); reads
///     content, tokens_cached, truncated, timings/* (src/types.ts LlamaResponse).
///   - llama.vim (ggml-org/llama.vim a1c8e6e40cb45df59b78add5b65d575386832465): autoload/llama.vim
///     llama#fim (with response_fields) and s:ring_update (the warm-up with response_fields [""]);
///     reads content, tokens_cached and the flat "timings/..." keys.
///   - Tabby (TabbyML/tabby 21b29048d7bcf6b94f9f482f2d0fd05efadfd19f), kind "llama.cpp/completion":
///     crates/http-api-bindings/src/completion/llama.rs; POST /completion, streamed, reads content and stop.
///   - Continue 1.3.40 (continuedev/continue d0a3c0b626b5bebc3bef4742eec05a0242be0bab), OpenAI
///     provider for autocomplete: core/llm/llms/OpenAI.ts _legacystreamComplete with the
///     stable-code FIM template (core/autocomplete/templating, its choice for a model name it does
///     not know), whose seven stops and the three common ones make ten; POST
///     /v1/completions, streamed, reads choices[0].text until [DONE].
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class EditorPluginTests(ServerFixture fixture) : IDisposable
{
    private readonly HttpClient _client = new() { BaseAddress = fixture.HttpAddress };

    public void Dispose() => _client.Dispose();

    // A real file the cursor sits in, long enough for the plugins' whole default context.
    private static readonly string[] Lines = File.ReadAllLines(Path.Combine(TestPaths.RepoRoot, "tests", "fixtures", "tokenizer", "make_corpus.py"));

    private static string J(string s) => JsonSerializer.Serialize(s);

    // llama.vscode's local context at (line, column): 256 lines before, 64 after, the line split at the cursor.
    private static (string Prefix, string Suffix, string Prompt, int Indent) VscodeContext(int line, int column)
    {
        var prefixLines = Lines[Math.Max(0, line - 256)..line];
        var suffixLines = Lines[(line + 1)..Math.Min(Lines.Length, line + 1 + 64)];
        var text = Lines[line];
        var linePrefix = text[..column];
        var prompt = linePrefix.Trim(' ', '\t').Length == 0 ? "" : linePrefix;
        return (string.Join('\n', prefixLines) + "\n", text[column..] + "\n" + string.Join('\n', suffixLines) + "\n", prompt, text.Length - text.TrimStart().Length);
    }

    private static string Chunks(long time) =>
        $$"""[{"text": {{J(string.Join('\n', Lines[10..42]))}}, "time": {{time}}, "filename": "/work/project/make_corpus.py"}, {"text": {{J(string.Join('\n', Lines[600..664]))}}, "time": {{time + 1}}, "filename": "/work/project/make_corpus.py"}]""";

    [Fact]
    public async Task Llama_vscode_completion_and_warm_up()
    {
        var line = Array.FindIndex(Lines, 400, l => l.StartsWith("        ", StringComparison.Ordinal) && l.Trim().Length > 8);
        var (prefix, suffix, prompt, indent) = VscodeContext(line, Lines[line].Length / 2);
        Assert.True(prefix.Length + suffix.Length > 4 * fixture.Model.ContextLength); // far more than the context holds

        // The warm-up the plugin sends while the user types (createRequestPayload(true, "", "", chunks, "")).
        var warm = await HttpTest.PostOkAsync(_client, "/infill", $$"""
            {"id_slot": 0, "input_prefix": "", "input_suffix": "", "input_extra": {{Chunks(1750000000000)}}, "prompt": "", "n_predict": 0, "samplers": [], "cache_prompt": true, "t_max_prompt_ms": 500, "t_max_predict_ms": 1}
            """);
        Assert.Equal("", warm.GetProperty("content").GetString());
        Assert.Equal(0, warm.GetProperty("tokens_predicted").GetInt32());
        Assert.True(warm.GetProperty("tokens_evaluated").GetInt32() > 0);
        await fixture.AssertEngineIdleAsync();

        // The completion request, as the plugin builds it with its default settings.
        var body = $$"""
            {"id_slot": 0, "input_prefix": {{J(prefix)}}, "input_suffix": {{J(suffix)}}, "input_extra": {{Chunks(1750000000000)}}, "prompt": {{J(prompt)}},
             "n_predict": 128, "n_cmpl": 3, "top_k": 40, "top_p": 0.99, "stream": false, "samplers": ["top_k", "top_p", "infill"], "cache_prompt": true,
             "n_indent": {{indent}}, "t_max_prompt_ms": 500, "t_max_predict_ms": 500}
            """;
        var result = await HttpTest.PostOkAsync(_client, "/infill", body);
        Assert.Equal(JsonValueKind.String, result.GetProperty("content").ValueKind);
        Assert.True(result.GetProperty("truncated").GetBoolean());
        Assert.InRange(result.GetProperty("tokens_evaluated").GetInt32(), 1, fixture.Model.ContextLength - 128);
        Assert.True(result.GetProperty("tokens_cached").GetInt32() >= 0);
        var timings = result.GetProperty("timings");
        foreach (var name in new[] { "prompt_n", "prompt_ms", "prompt_per_second", "predicted_n", "predicted_ms", "predicted_per_second" })
            Assert.Equal(JsonValueKind.Number, timings.GetProperty(name).ValueKind);
        await fixture.AssertEngineIdleAsync();
    }

    [Fact]
    public async Task N_predict_0_computes_the_prompt_and_keeps_it_for_the_next_request()
    {
        var extra = $$"""[{"text": {{J(string.Join('\n', Lines[100..110]))}}, "filename": "a.py"}]""";
        var warm = await HttpTest.PostOkAsync(_client, "/infill",
            $$"""{"input_prefix": "def f(x):\n", "input_suffix": "\n", "input_extra": {{extra}}, "n_predict": 0, "token_healing": false}""");
        var evaluated = warm.GetProperty("tokens_evaluated").GetInt32();
        Assert.Equal(0, warm.GetProperty("tokens_predicted").GetInt32());
        Assert.Equal(evaluated - warm.GetProperty("tokens_cached").GetInt32(), warm.GetProperty("timings").GetProperty("prompt_n").GetInt32());
        await fixture.AssertEngineIdleAsync();

        // The same context with a prediction: the warm-up's KV serves all but the last block of it.
        var next = await HttpTest.PostOkAsync(_client, "/infill",
            $$"""{"input_prefix": "def f(x):\n", "input_suffix": "\n", "input_extra": {{extra}}, "n_predict": 2, "token_healing": false, "temperature": 0}""");
        Assert.Equal(evaluated, next.GetProperty("tokens_evaluated").GetInt32());
        Assert.True(next.GetProperty("tokens_cached").GetInt32() >= evaluated - fixture.Model.Engine.KvBlockTokens,
            $"cached {next.GetProperty("tokens_cached").GetInt32()} of {evaluated}");
        await fixture.AssertEngineIdleAsync();
    }

    [Fact]
    public async Task Trimming_drops_input_extra_then_the_prefix_front_and_the_suffix_back()
    {
        // Byte-level vocabulary: a token per character. Room: 512 - 16 = 496 tokens.
        var prefix = string.Concat(Enumerable.Range(0, 60).Select(i => $"p = {i:D4}\n")); // 600
        var suffix = string.Concat(Enumerable.Range(0, 30).Select(i => $"s = {i:D4}\n")); // 300
        const string middle = "x = ";
        var extra = $$"""[{"filename": "e.py", "text": {{J(new string('e', 100))}}}]""";
        var body = $$"""{"input_prefix": {{J(prefix)}}, "input_suffix": {{J(suffix)}}, "prompt": {{J(middle)}}, "input_extra": {{extra}}, "n_predict": 16, "temperature": 0, "ignore_eos": true, "token_healing": false}""";
        var infill = await HttpTest.PostOkAsync(_client, "/infill", body);
        Assert.True(infill.GetProperty("truncated").GetBoolean());
        const int room = 512 - 16, fixedLength = 3 + 4;
        Assert.Equal(room, infill.GetProperty("tokens_evaluated").GetInt32());

        // The suffix keeps a quarter of the room less the markers and the middle, from its front; the prefix the rest, from its back.
        var suffixTake = (room / 4) - fixedLength;
        var prefixTake = room - fixedLength - suffixTake;
        var ids = new List<int> { ServerFixture.FimPrefix };
        ids.AddRange(prefix[^prefixTake..].Select(c => (int)c));
        ids.Add(ServerFixture.FimSuffix);
        ids.AddRange(suffix[..suffixTake].Select(c => (int)c));
        ids.Add(ServerFixture.FimMiddle);
        ids.AddRange(middle.Select(c => (int)c));
        var completion = await HttpTest.PostOkAsync(_client, "/completion",
            $$"""{"prompt": [{{string.Join(", ", ids)}}], "n_predict": 16, "temperature": 0, "ignore_eos": true}""");
        Assert.Equal(room, completion.GetProperty("tokens_evaluated").GetInt32());
        Assert.Equal(completion.GetProperty("content").GetString(), infill.GetProperty("content").GetString());
        await fixture.AssertEngineIdleAsync();
    }

    [Fact]
    public async Task Llama_vim_completion_answers_the_response_fields_flat()
    {
        var line = 500;
        var text = Lines[line];
        var indent = text.Length - text.TrimStart().Length;
        var prefix = string.Join('\n', Lines[Math.Max(0, line - 256)..line]) + "\n";
        var middle = text[..(indent + 4)];
        var suffix = text[(indent + 4)..] + "\n" + string.Join('\n', Lines[(line + 1)..(line + 65)]) + "\n";
        var extra = $$"""[{"text": {{J(string.Join('\n', Lines[20..52]))}}, "time": 1750000000, "filename": "make_corpus.py"}]""";
        var body = $$"""
            {"id_slot": 0, "input_prefix": {{J(prefix)}}, "input_suffix": {{J(suffix)}}, "input_extra": {{extra}}, "prompt": {{J(middle)}},
             "n_predict": 128, "stop": [], "n_indent": {{indent}}, "top_k": 40, "top_p": 0.90, "samplers": ["top_k", "top_p", "infill"],
             "stream": false, "cache_prompt": true, "t_max_prompt_ms": 500, "t_max_predict_ms": 250,
             "response_fields": ["content", "timings/prompt_n", "timings/prompt_ms", "timings/prompt_per_token_ms", "timings/prompt_per_second",
                                 "timings/predicted_n", "timings/predicted_ms", "timings/predicted_per_token_ms", "timings/predicted_per_second",
                                 "truncated", "tokens_cached"]}
            """;
        var result = await HttpTest.PostOkAsync(_client, "/infill", body);
        var keys = result.EnumerateObject().Select(p => p.Name).Order(StringComparer.Ordinal).ToArray();
        Assert.Equal(new[]
        {
            "content", "timings/predicted_ms", "timings/predicted_n", "timings/predicted_per_second", "timings/predicted_per_token_ms",
            "timings/prompt_ms", "timings/prompt_n", "timings/prompt_per_second", "timings/prompt_per_token_ms", "tokens_cached", "truncated",
        }, keys);
        Assert.Equal(JsonValueKind.String, result.GetProperty("content").ValueKind);
        Assert.True(result.GetProperty("truncated").GetBoolean());
        Assert.Equal(JsonValueKind.Number, result.GetProperty("timings/prompt_n").ValueKind);
        // Token healing's tokens (at most one per byte of the middle's last token) come on top of n_predict.
        Assert.InRange(result.GetProperty("timings/predicted_n").GetInt32(), 0, 128 + Encoding.UTF8.GetByteCount(middle));

        // s:ring_update's warm-up: only the extra context, nothing to predict, no field wanted.
        using var warm = await _client.PostAsync("/infill", HttpTest.Json($$"""
            {"id_slot": 0, "input_prefix": "", "input_suffix": "", "input_extra": {{extra}}, "prompt": "", "n_predict": 0, "temperature": 0.0,
             "samplers": [], "stream": false, "cache_prompt": true, "t_max_prompt_ms": 1, "t_max_predict_ms": 1, "response_fields": [""]}
            """));
        Assert.Equal(HttpStatusCode.OK, warm.StatusCode);
        Assert.Equal("{}", await warm.Content.ReadAsStringAsync());
        await fixture.AssertEngineIdleAsync();
    }

    [Fact]
    public async Task Tabby_streams_a_completion_from_a_fim_prompt()
    {
        var prompt = "<fim_prefix>def add(a, b):\n    return <fim_suffix>\n\nprint(add(1, 2))\n<fim_middle>";
        string Body(bool stream) =>
            $$"""{"seed": 1750000000000, "prompt": {{J(prompt)}}, "n_predict": 64, "temperature": 0.1, "stream": {{(stream ? "true" : "false")}}, "penalty_last_n": 0, "presence_penalty": 0.0}""";
        var whole = await HttpTest.PostOkAsync(_client, "/completion", Body(false));
        // The marker texts are read as the FIM tokens: 3 markers and a token per character.
        Assert.Equal(3 + "def add(a, b):\n    return ".Length + "\n\nprint(add(1, 2))\n".Length, whole.GetProperty("tokens_evaluated").GetInt32());

        using var response = await _client.PostAsync("/completion", HttpTest.Json(Body(true)));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var events = await HttpTest.ReadEventsAsync(response);
        var content = new StringBuilder();
        for (var i = 0; i < events.Count; i++)
        {
            using var e = JsonDocument.Parse(events[i]);
            content.Append(e.RootElement.GetProperty("content").GetString());
            Assert.Equal(i == events.Count - 1, e.RootElement.GetProperty("stop").GetBoolean());
        }
        Assert.Equal(whole.GetProperty("content").GetString(), content.ToString());
        await fixture.AssertEngineIdleAsync();
    }

    [Fact]
    public async Task Continue_streams_a_template_fim_completion_with_its_stop_strings()
    {
        var prompt = "<fim_prefix>def add(a, b):\n    return <fim_suffix>\n\nprint(add(1, 2))\n<fim_middle>";
        // maxTokens as set in Continue's model configuration (its own default, 4096, exceeds this model's context).
        var body = $$"""
            {"model": "{{fixture.Model.Name}}", "max_tokens": 64, "temperature": 0.01, "stream": true,
             "stop": ["<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<file_sep>", "<|endoftext|>", "</fim_middle>", "</code>", "/src/", "#- coding: utf-8", "```"],
             "prompt": {{J(prompt)}}}
            """;
        using var response = await _client.PostAsync("/v1/completions", HttpTest.Json(body));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var events = await HttpTest.ReadEventsAsync(response);
        Assert.Equal("[DONE]", events[^1]);
        var finish = events.SkipLast(1).Select(e => JsonDocument.Parse(e).RootElement.GetProperty("choices")[0])
            .Last().GetProperty("finish_reason").GetString();
        Assert.Contains(finish, new[] { "stop", "length" });
        await fixture.AssertEngineIdleAsync();
    }

    [Fact]
    public async Task N_indent_ends_at_a_line_indented_less_and_cuts_it()
    {
        await using var server = await ScriptedServer.StartAsync(fixture, "x\n    y\n  z\nw", promptLength: 3, TimeSpan.Zero);
        var result = await HttpTest.PostOkAsync(server.Client, "/completion", """{"prompt": [65, 66, 67], "n_predict": 32, "n_indent": 4}""");
        Assert.Equal("x\n    y\n  ", result.GetProperty("content").GetString());
        Assert.Equal("limit", result.GetProperty("stop_type").GetString());
        Assert.Equal("x\n    y\n  z".Length, result.GetProperty("tokens_predicted").GetInt32());

        var whole = await HttpTest.PostOkAsync(server.Client, "/completion", """{"prompt": [65, 66, 67], "n_predict": 32, "n_indent": 2}""");
        Assert.Equal("x\n    y\n  z\n", whole.GetProperty("content").GetString());
        await server.AssertIdleAsync();
    }

    [Fact]
    public async Task T_max_predict_ms_ends_at_the_first_newline_after_the_time_is_up()
    {
        // 20 ms a step: by the third token more than 1 ms has passed since the first.
        await using var server = await ScriptedServer.StartAsync(fixture, "ab\ncd\nef\n", promptLength: 3 + 9 + 1, TimeSpan.FromMilliseconds(20));
        const string body = """{"input_prefix": "def f():\n", "input_suffix": "\n", "n_predict": 32, "token_healing": false""";
        var limited = await HttpTest.PostOkAsync(server.Client, "/infill", body + """, "t_max_predict_ms": 1}""");
        Assert.Equal("ab\n", limited.GetProperty("content").GetString());
        Assert.Equal("limit", limited.GetProperty("stop_type").GetString());
        Assert.Equal(3, limited.GetProperty("tokens_predicted").GetInt32());

        var unlimited = await HttpTest.PostOkAsync(server.Client, "/infill", body + "}");
        Assert.Equal("ab\ncd\nef\n", unlimited.GetProperty("content").GetString());
        Assert.Equal("eos", unlimited.GetProperty("stop_type").GetString());
        await server.AssertIdleAsync();
    }
}

/// <summary>
/// A stand-in decoder that writes a fixed text, one byte token per position after the prompt, then
/// the end-of-text token, taking <c>perStep</c> per model run.
/// </summary>
/// <param name="promptLength">The prompt's length: the first generated position writes the script's first character.</param>
internal sealed class ScriptedDecoder(int capacity, string script, int promptLength, TimeSpan perStep) : IDecoderModel
{
    private float[] _logits = [];

    public int Slots => 1;
    public int Capacity => capacity;
    public int VocabSize => ServerFixture.VocabSize;
    public long KvBytesPerToken => 1;

    public ReadOnlySpan<float> Step(int firstSlot, scoped ReadOnlySpan<SequenceStep> rows, scoped ReadOnlySpan<int> tokens)
    {
        if (perStep > TimeSpan.Zero)
            Thread.Sleep(perStep);
        var size = rows.Length * VocabSize;
        if (_logits.Length < size)
            _logits = new float[size];
        Array.Clear(_logits, 0, size);
        for (var r = 0; r < rows.Length; r++)
        {
            var index = rows[r].PastLength + rows[r].TokenCount - promptLength;
            var token = index >= 0 && index < script.Length ? script[index] : ServerFixture.EndOfText;
            _logits[(r * VocabSize) + token] = 50;
        }
        return _logits.AsSpan(0, size);
    }

    public void CopyPrefix(int fromSlot, int toSlot, int length)
    {
    }
}

/// <summary>A second server over a <see cref="ScriptedDecoder"/>.</summary>
internal sealed class ScriptedServer : IAsyncDisposable
{
    private readonly SecondServer _server;
    private readonly ServedModel _model;

    private ScriptedServer(SecondServer server, ServedModel model)
    {
        _server = server;
        _model = model;
    }

    public HttpClient Client => _server.Client;

    public static async Task<ScriptedServer> StartAsync(ServerFixture fixture, string script, int promptLength, TimeSpan perStep)
    {
        var decoder = new ScriptedDecoder(fixture.Model.ContextLength, script, promptLength, perStep);
        var engine = new InferenceEngine(decoder, fixture.Model.Tokenizer, new EngineOptions { MaxWaitingRequests = 4, EosTokenIds = [ServerFixture.EndOfText] });
        var model = new ServedModel("scripted", fixture.Model.Folder, fixture.Model.Tokenizer, engine, 1);
        var server = await SecondServer.StartAsync(SecondServer.OptionsLike(fixture.Options), model, new ServerState { State = ServingState.Serving });
        return new ScriptedServer(server, model);
    }

    public Task AssertIdleAsync() => ServerFixture.AssertIdleAsync(_model.Engine);

    public async ValueTask DisposeAsync()
    {
        await _server.DisposeAsync();
        await _model.DisposeAsync();
    }
}
