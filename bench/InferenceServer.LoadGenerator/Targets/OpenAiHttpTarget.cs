using System.Buffers;
using System.Net.ServerSentEvents;
using System.Net.Http.Headers;
using System.Text.Json;
using InferenceServer.LoadGenerator.Measurement;

namespace InferenceServer.LoadGenerator.Targets;

/// <summary>
/// Any OpenAI-style server's POST /v1/completions, streamed (or whole, when a request asks): our HTTP port, vLLM, TGI, llama.cpp's
/// server. Fill-in-the-middle goes in "suffix"; usage comes from stream_options.include_usage.
/// </summary>
public sealed class OpenAiHttpTarget : ILoadTarget
{
    private readonly HttpClient _http;
    private readonly Uri _completions;
    private readonly ModelNames _models;
    private readonly string? _apiKey;

    /// <param name="baseAddress">The server's root (http://HOST:PORT) or its /v1 folder.</param>
    /// <param name="model">The model field: a name, or names separated by commas sent in turn (<see cref="ModelNames"/>).</param>
    public OpenAiHttpTarget(Uri baseAddress, string? model, string? apiKey, HttpMessageHandler? handler = null)
    {
        ArgumentNullException.ThrowIfNull(baseAddress);
        _http = new HttpClient(handler ?? new SocketsHttpHandler { PooledConnectionLifetime = Timeout.InfiniteTimeSpan })
        {
            Timeout = Timeout.InfiniteTimeSpan,
        };
        var root = baseAddress.AbsoluteUri.EndsWith('/') ? baseAddress : new Uri(baseAddress.AbsoluteUri + "/");
        _completions = new Uri(root, root.AbsolutePath.EndsWith("/v1/", StringComparison.Ordinal) ? "completions" : "v1/completions");
        _models = new ModelNames(model);
        _apiKey = apiKey;
        Address = baseAddress.AbsoluteUri.TrimEnd('/');
    }

    public string Kind => "http";
    public string Address { get; }

    public async Task<RequestRecord> SendAsync(LoadRequest request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        using var timer = new ResponseTimer(cancellationToken);
        using var message = new HttpRequestMessage(HttpMethod.Post, _completions) { Content = Body(request) };
        if (_apiKey is not null)
            message.Headers.Authorization = new AuthenticationHeaderValue("Bearer", _apiKey);
        try
        {
            using var response = await _http.SendAsync(message, HttpCompletionOption.ResponseHeadersRead, cancellationToken).ConfigureAwait(false);
            if (!response.IsSuccessStatusCode)
            {
                var text = await response.Content.ReadAsStringAsync(cancellationToken).ConfigureAwait(false);
                return timer.Failed("http:" + (int)response.StatusCode, ErrorMessage(text));
            }
            if (!request.Stream)
                return await ReadWholeAsync(response, timer, cancellationToken).ConfigureAwait(false);
            var stream = await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
            var state = new StreamState(timer);
            // The framework's SSE parser (System.Net.ServerSentEvents) hands each event's data over as bytes.
            // Read to the end even after [DONE]: a response left unfinished closes its connection instead of returning it to the pool.
            var events = SseParser.Create(stream, (_, data) => state.OnEvent(data));
            await foreach (var _ in events.EnumerateAsync(cancellationToken).ConfigureAwait(false))
            {
            }
            if (state.Error is { } error)
                return timer.Failed("stream:error", error);
            if (!state.Done && state.FinishReason is null)
                return timer.Failed("stream:truncated", "the stream ended without a finish reason or [DONE]");
            return timer.Complete(state.CompletionTokens, state.PromptTokens, state.CachedTokens, state.FinishReason);
        }
        catch (Exception e) when (cancellationToken.IsCancellationRequested && e is OperationCanceledException or IOException or HttpRequestException)
        {
            // Aborting the request closes the connection: the server sees the client leave.
            return timer.Cancelled();
        }
        catch (HttpRequestException e)
        {
            return timer.Failed("transport:" + e.HttpRequestError, e.Message);
        }
        catch (IOException e)
        {
            return timer.Failed("transport:io", e.Message);
        }
        catch (JsonException e)
        {
            return timer.Failed("stream:malformed", e.Message);
        }
    }

    /// <summary>An unstreamed answer: one JSON body of the same shape as a stream's chunks, all of it at once.</summary>
    private static async Task<RequestRecord> ReadWholeAsync(HttpResponseMessage response, ResponseTimer timer, CancellationToken cancellationToken)
    {
        var body = await response.Content.ReadAsByteArrayAsync(cancellationToken).ConfigureAwait(false);
        var whole = CompletionChunk.Parse(body);
        if (whole.Error is { } error)
            return timer.Failed("body:error", error);
        if (whole.FinishReason is null)
            return timer.Failed("body:truncated", "the response had no finish reason");
        timer.Tokens(whole.CompletionTokens ?? (whole.HasText ? 1 : 0));
        return timer.Complete(whole.CompletionTokens, whole.PromptTokens, whole.CachedTokens, whole.FinishReason);
    }

    /// <summary>The request body; public for tests that check what is sent.</summary>
    public ByteArrayContent Body(LoadRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        var output = new ArrayBufferWriter<byte>(request.Prompt.Length + (request.Suffix?.Length ?? 0) + 256);
        using (var json = new Utf8JsonWriter(output))
        {
            json.WriteStartObject();
            if (_models.Next() is { } model)
                json.WriteString("model", model);
            json.WriteString("prompt", request.Prompt);
            if (request.Suffix is { } suffix)
                json.WriteString("suffix", suffix);
            json.WriteNumber("max_tokens", request.MaxTokens);
            json.WriteNumber("temperature", request.Temperature);
            if (request.Stop.Count > 0)
            {
                json.WriteStartArray("stop");
                foreach (var stop in request.Stop)
                    json.WriteStringValue(stop);
                json.WriteEndArray();
            }
            if (request.IgnoreEos)
                json.WriteBoolean("ignore_eos", true);
            json.WriteBoolean("stream", request.Stream);
            if (request.Stream)
            {
                json.WriteStartObject("stream_options");
                json.WriteBoolean("include_usage", true);
                json.WriteEndObject();
            }
            json.WriteEndObject();
        }
        var content = new ByteArrayContent(output.WrittenSpan.ToArray());
        content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        return content;
    }

    /// <summary>The message of an OpenAI-style error body, else the body's start.</summary>
    private static string ErrorMessage(string body)
    {
        try
        {
            using var doc = JsonDocument.Parse(body);
            if (doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("error", out var error))
            {
                if (error.ValueKind == JsonValueKind.Object && error.TryGetProperty("message", out var message) && message.ValueKind == JsonValueKind.String)
                    return message.GetString()!;
                if (error.ValueKind == JsonValueKind.String)
                    return error.GetString()!;
            }
        }
        catch (JsonException)
        {
        }
        return body.Length > 200 ? body[..200] : body;
    }

    /// <summary>What the events of one stream said so far.</summary>
    private sealed class StreamState(ResponseTimer timer)
    {
        public bool Done { get; private set; }
        public string? FinishReason { get; private set; }
        public int? PromptTokens { get; private set; }
        public int? CompletionTokens { get; private set; }
        public int? CachedTokens { get; private set; }
        public string? Error { get; private set; }

        /// <summary>[DONE] or an error ends the stream; events after it are ignored.</summary>
        public bool Stopped { get; private set; }

        public bool OnEvent(ReadOnlySpan<byte> data)
        {
            if (Stopped)
                return false;
            if (data.SequenceEqual("[DONE]"u8))
            {
                Done = true;
                Stopped = true;
                return false;
            }
            var chunk = CompletionChunk.Parse(data);
            if (chunk.Error is { } error)
            {
                Error = error;
                Stopped = true;
                return false;
            }
            // A chunk per token is what servers send; where one carries more, usage corrects the total.
            if (chunk.HasText)
                timer.Tokens(1);
            FinishReason ??= chunk.FinishReason;
            if (chunk.CompletionTokens is not null)
            {
                PromptTokens = chunk.PromptTokens;
                CompletionTokens = chunk.CompletionTokens;
                CachedTokens = chunk.CachedTokens;
            }
            return true;
        }
    }

    public ValueTask DisposeAsync()
    {
        _http.Dispose();
        return ValueTask.CompletedTask;
    }
}
