using System.Net;
using System.Text;
using System.Text.Json;
using InferenceServer.Engine;
using InferenceServer.Model;
using InferenceServer.Tokenizer.Model;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Logging;

namespace InferenceServer.Server.Tests;

/// <summary>Helpers for the HTTP front end's tests: JSON bodies, server-sent events, error bodies.</summary>
internal static class HttpTest
{
    public static StringContent Json(string json) => new(json, Encoding.UTF8, "application/json");

    public static async Task<JsonElement> ReadJsonAsync(HttpResponseMessage response)
    {
        var text = await response.Content.ReadAsStringAsync();
        using var document = JsonDocument.Parse(text);
        return document.RootElement.Clone();
    }

    /// <summary>POSTs JSON and returns the parsed body, asserting 200.</summary>
    public static async Task<JsonElement> PostOkAsync(HttpClient client, string path, string json)
    {
        using var response = await client.PostAsync(path, Json(json));
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{path} answered {(int)response.StatusCode}: {body}");
        using var document = JsonDocument.Parse(body);
        return document.RootElement.Clone();
    }

    /// <summary>The payloads of a whole server-sent event stream ("data: X" events, in order).</summary>
    public static async Task<List<string>> ReadEventsAsync(HttpResponseMessage response)
    {
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        var text = await response.Content.ReadAsStringAsync();
        Assert.EndsWith("\n\n", text, StringComparison.Ordinal);
        var events = new List<string>();
        foreach (var block in text.Split("\n\n", StringSplitOptions.RemoveEmptyEntries))
        {
            Assert.StartsWith("data: ", block, StringComparison.Ordinal);
            Assert.DoesNotContain('\n', block);
            events.Add(block["data: ".Length..]);
        }
        return events;
    }

    /// <summary>The response is an OpenAI error body with this status (and code, when given).</summary>
    public static async Task<JsonElement> AssertErrorAsync(HttpResponseMessage response, HttpStatusCode status, string? code = null, string? param = null)
    {
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == status, $"expected {(int)status}, got {(int)response.StatusCode}: {text}");
        Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
        using var document = JsonDocument.Parse(text);
        var error = document.RootElement.GetProperty("error").Clone();
        Assert.False(string.IsNullOrEmpty(error.GetProperty("message").GetString()));
        Assert.False(string.IsNullOrEmpty(error.GetProperty("type").GetString()));
        Assert.True(error.TryGetProperty("param", out var actualParam));
        Assert.True(error.TryGetProperty("code", out var actualCode));
        if (code is not null)
            Assert.Equal(code, actualCode.GetString());
        if (param is not null)
            Assert.Equal(param, actualParam.GetString());
        return error;
    }

    /// <summary>After <paramref name="after"/>: a normal completion is served, and the engine goes back to idle (nothing running, waiting or holding KV).</summary>
    public static async Task AssertStillServingAsync(HttpClient client, ServerFixture fixture, string after)
    {
        using var response = await client.PostAsync("/v1/completions", Json($"{{\"model\": \"{fixture.Model.Name}\", \"prompt\": \"ok\", \"max_tokens\": 2}}"));
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"after {after}: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
        await fixture.AssertEngineIdleAsync();
    }

    /// <summary>A byte-level tokenizer like the fixture's, with an end-of-text token but no fill-in-the-middle tokens.</summary>
    public static Tokenizer.Tokenizer TokenizerWithoutFim()
    {
        var json = new StringBuilder("{\"model\": {\"type\": \"BPE\", \"vocab\": {");
        for (var b = 0; b < 256; b++)
        {
            var c = ByteLevelAlphabet.ByteToChar((byte)b);
            json.Append('"').Append(c switch { '"' => "\\\"", '\\' => "\\\\", _ => c.ToString() }).Append("\": ").Append(b).Append(", ");
        }
        json.Append("\"<|endoftext|>\": 256}, \"merges\": []}, ");
        json.Append("\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false}, \"decoder\": {\"type\": \"ByteLevel\"}, ");
        json.Append("\"added_tokens\": [{\"id\": 256, \"content\": \"<|endoftext|>\", \"special\": true, \"normalized\": false}]}");
        using var stream = new MemoryStream(Encoding.UTF8.GetBytes(json.ToString()));
        return Tokenizer.Tokenizer.Load(stream, "no-fim");
    }
}

/// <summary>
/// A second server over an existing model (and so the fixture's engine), with its own options and
/// state: for API keys, serving states and a model without fill-in-the-middle.
/// </summary>
internal sealed class SecondServer : IAsyncDisposable
{
    private readonly WebApplication _app;

    private SecondServer(WebApplication app, ServerOptions options, HttpMessageHandler? handler)
    {
        _app = app;
        Options = options;
        Client = new HttpClient(handler ?? new SocketsHttpHandler()) { BaseAddress = new Uri($"{Scheme}://127.0.0.1:{options.HttpPort}") };
    }

    private string Scheme => Options.Tls ? "https" : "http";

    public HttpClient Client { get; }
    public ServerOptions Options { get; }
    public Uri GrpcAddress => new($"{Scheme}://127.0.0.1:{Options.GrpcPort}");

    /// <param name="configuration">Host configuration (e.g. Kestrel certificates).</param>
    /// <param name="handler">The handler the HTTP client uses (e.g. one that trusts a test certificate).</param>
    /// <param name="logs">Where the server's log entries go (besides the console, at the options' level).</param>
    public static Task<SecondServer> StartAsync(ServerOptions options, ServedModel model, ServerState state,
        Microsoft.Extensions.Configuration.IConfiguration? configuration = null, HttpMessageHandler? handler = null, LogCapture? logs = null) =>
        StartAsync(options, new ServedModels(model), state, configuration, handler, logs);

    /// <inheritdoc cref="StartAsync(ServerOptions, ServedModel, ServerState, Microsoft.Extensions.Configuration.IConfiguration?, HttpMessageHandler?, LogCapture?)"/>
    public static async Task<SecondServer> StartAsync(ServerOptions options, ServedModels models, ServerState state,
        Microsoft.Extensions.Configuration.IConfiguration? configuration = null, HttpMessageHandler? handler = null, LogCapture? logs = null)
    {
        var app = ServerHost.Build(options, models, state, configuration, logs is null ? null : logging => logging.AddProvider(logs));
        await app.StartAsync();
        return new SecondServer(app, options, handler);
    }

    public static ServerOptions OptionsLike(ServerOptions options) =>
        options with { HttpPort = ServerFixture.FreePort(), GrpcPort = ServerFixture.FreePort() };

    /// <summary>The shutdown the serve command runs on SIGTERM.</summary>
    public Task DrainAsync(ServerState state, TimeSpan grace) => ServerShutdown.DrainAsync(_app, state, grace);

    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}

/// <summary>
/// A stand-in decoder that always strongly prefers one token and takes milliseconds per step, so a
/// generation lasts long enough for a client to leave in the middle of it (the fixture's tiny model
/// makes hundreds of tokens in a few dozen milliseconds). Seconds per generation leave a wide margin:
/// the test host's thread pool can stall for most of a second on a small machine (xunit and VSTest
/// each block a pool thread).
/// </summary>
internal sealed class SlowDecoder(int slots, int capacity, int vocabSize, int token, TimeSpan perStep) : IDecoderModel
{
    private float[] _logits = [];
    private int _steps;

    public int Slots => slots;
    public int Capacity => capacity;
    public int VocabSize => vocabSize;
    public long KvBytesPerToken => 1;

    /// <summary>Steps run so far (prefills and decodes).</summary>
    public int Steps => Volatile.Read(ref _steps);

    /// <summary>The step (counted as <see cref="Steps"/> counts) that throws, as a failing device would; 0 for none.</summary>
    public int FailingStep { get; set; }

    public ReadOnlySpan<float> Step(int firstSlot, scoped ReadOnlySpan<SequenceStep> rows, scoped ReadOnlySpan<int> tokens)
    {
        Thread.Sleep(perStep);
        if (Interlocked.Increment(ref _steps) == FailingStep)
            throw new InvalidOperationException("the device failed (secret detail)");
        var size = rows.Length * vocabSize;
        if (_logits.Length < size)
        {
            _logits = new float[size];
            for (var r = 0; r < rows.Length; r++)
                _logits[(r * vocabSize) + token] = 50;
        }
        return _logits.AsSpan(0, size);
    }

    public void CopyPrefix(int fromSlot, int toSlot, int length)
    {
    }
}

/// <summary>A second server whose model is a <see cref="SlowDecoder"/> behind its own engine.</summary>
internal sealed class SlowServer : IAsyncDisposable
{
    private readonly SecondServer _server;

    private SlowServer(SecondServer server, ServedModel model, SlowDecoder decoder, ServerState state)
    {
        _server = server;
        State = state;
        Model = model;
        Decoder = decoder;
    }

    public HttpClient Client => _server.Client;
    public Uri GrpcAddress => _server.GrpcAddress;
    public ServedModel Model { get; }
    public SlowDecoder Decoder { get; }
    public ServerState State { get; }

    /// <inheritdoc cref="SecondServer.DrainAsync"/>
    public Task DrainAsync(TimeSpan grace) => _server.DrainAsync(State, grace);

    /// <param name="slots">Sequences running at once.</param>
    /// <param name="maxWaiting">Requests that may wait; past that, 429.</param>
    public static async Task<SlowServer> StartAsync(ServerFixture fixture, int slots, int maxWaiting, LogCapture? logs = null)
    {
        var decoder = new SlowDecoder(slots, fixture.Model.ContextLength, ServerFixture.VocabSize, 'a', TimeSpan.FromMilliseconds(10));
        var engine = new InferenceEngine(decoder, fixture.Model.Tokenizer,
            new EngineOptions { MaxWaitingRequests = maxWaiting, EosTokenIds = [ServerFixture.EndOfText] });
        var model = new ServedModel("slow", fixture.Model.Folder, fixture.Model.Tokenizer, engine, slots);
        var state = new ServerState { State = ServingState.Serving };
        var server = await SecondServer.StartAsync(SecondServer.OptionsLike(fixture.Options), model, state, logs: logs);
        return new SlowServer(server, model, decoder, state);
    }

    /// <summary>Waits until the slow engine holds no running or waiting sequence and no KV block.</summary>
    public Task AssertIdleAsync() => ServerFixture.AssertIdleAsync(Model.Engine);

    /// <summary>Waits until the engine has this many sequences running and waiting.</summary>
    public async Task WaitForAsync(int running, int waiting)
    {
        for (var i = 0; i < 500; i++)
        {
            var s = Model.Engine.Snapshot;
            if (s.Running == running && s.Waiting == waiting)
                return;
            await Task.Delay(10);
        }
        Assert.Fail($"expected {running} running and {waiting} waiting: {Model.Engine.Snapshot}");
    }

    public async ValueTask DisposeAsync()
    {
        await _server.DisposeAsync();
        await Model.DisposeAsync();
    }
}
