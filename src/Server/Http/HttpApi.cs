using System.Buffers;
using System.IO.Pipelines;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using InferenceServer.Engine;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace InferenceServer.Server.Http;

/// <summary>A failure the HTTP front end answers with an OpenAI-style error body.</summary>
internal sealed class HttpApiException(int status, string type, string message, string? param = null, string? code = null) : Exception(message)
{
    public int Status { get; } = status;
    public string Type { get; } = type;
    public string? Param { get; } = param;
    public string? Code { get; } = code;

    public static HttpApiException BadRequest(string message, string? param = null, string? code = null) =>
        new(400, "invalid_request_error", message, param, code);

    /// <summary>A call the server ended because it is shutting down (the grace period is over).</summary>
    public static HttpApiException ShuttingDown() => From(CallFailures.ShuttingDown());

    /// <summary>The HTTP form of an engine or validation failure (status and type from <see cref="RequestException"/>).</summary>
    public static HttpApiException From(Exception e)
    {
        if (e is HttpApiException http)
            return http;
        var request = RequestException.From(e);
        var code = request.Code switch
        {
            RequestErrorCode.ResourceExhausted => "rate_limit_exceeded",
            RequestErrorCode.Unavailable => "service_unavailable",
            RequestErrorCode.Internal => "internal_error",
            // The only thing a request names that may not exist is a model (or adapter).
            RequestErrorCode.NotFound => "model_not_found",
            _ => null,
        };
        var param = request.Code == RequestErrorCode.NotFound ? "model" : ParamOf(request);
        return new HttpApiException(request.HttpStatus, request.OpenAiType, request.Message, param, code);
    }

    // The shared validation names the parameter first ("temperature must be ..."): report it as OpenAI's param.
    private static readonly string[] Parameters =
    [
        "max_tokens", "temperature", "top_k", "top_p", "min_p", "repetition_penalty",
        "frequency_penalty", "presence_penalty", "logprobs", "stop", "priority",
    ];

    private static string? ParamOf(RequestException e)
    {
        if (e.Code != RequestErrorCode.InvalidArgument)
            return null;
        foreach (var name in Parameters)
        {
            if (e.Message.StartsWith(name + " ", StringComparison.Ordinal))
                return name;
        }
        return e.Message.StartsWith("the prompt", StringComparison.Ordinal) ? "prompt" : null;
    }
}

/// <summary>Reading request bodies and writing responses, with the checks every endpoint shares.</summary>
internal static class HttpApi
{
    private static readonly byte[] DataPrefix = "data: "u8.ToArray();
    private static readonly byte[] EventEnd = "\n\n"u8.ToArray();
    private static readonly byte[] DoneEvent = "data: [DONE]\n\n"u8.ToArray();

    /// <summary>
    /// The body as <typeparamref name="T"/>: 415 unless it is JSON, 413 past <paramref name="maxBytes"/>
    /// (announced or actual), 400 when it does not parse or has a wrongly typed field, or when the
    /// body itself is malformed (shorter than its Content-Length, a bad chunk), 408 when it does not
    /// arrive in time (Kestrel's minimum request body data rate). <paramref name="cutoff"/> (the
    /// shutdown's) stops a read that waits for a body still on its way.
    /// </summary>
    public static async Task<T> ReadJsonAsync<T>(HttpContext context, JsonTypeInfo<T> type, long maxBytes, CancellationToken cutoff)
        where T : class
    {
        var request = context.Request;
        if (!IsJson(request.ContentType))
        {
            throw new HttpApiException(415, "invalid_request_error",
                $"the body must be JSON (Content-Type: application/json), got {(string.IsNullOrEmpty(request.ContentType) ? "no Content-Type" : $"'{request.ContentType}'")}",
                code: "unsupported_media_type");
        }
        if (request.ContentLength > maxBytes)
            throw TooLarge(maxBytes);
        if (context.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } limit)
            limit.MaxRequestBodySize = maxBytes;
        T? value;
        try
        {
            var body = await ReadBodyAsync(request, maxBytes, cutoff, context.RequestAborted).ConfigureAwait(false);
            value = JsonSerializer.Deserialize(body.WrittenSpan, type);
        }
        catch (BadHttpRequestException e) when (e.StatusCode == StatusCodes.Status413PayloadTooLarge)
        {
            throw TooLarge(maxBytes);
        }
        catch (BadHttpRequestException e) when (e.StatusCode == StatusCodes.Status408RequestTimeout)
        {
            throw new HttpApiException(408, "invalid_request_error", "the request body did not arrive in time", code: "request_timeout");
        }
        catch (BadHttpRequestException e)
        {
            // Kestrel's message names what was wrong with the framing ("Unexpected end of request content.", "Bad chunk size data.").
            throw HttpApiException.BadRequest("the request body is malformed or incomplete: " + e.Message, code: "invalid_body");
        }
        catch (IOException e) when (!context.RequestAborted.IsCancellationRequested)
        {
            // Kestrel reports some framing errors as I/O errors (a chunk size too large to count).
            throw HttpApiException.BadRequest("the request body is malformed or incomplete: " + e.Message, code: "invalid_body");
        }
        catch (JsonException e)
        {
            throw HttpApiException.BadRequest("the body is not valid JSON for this endpoint: " + e.Message, FieldOf(e.Path), "invalid_json");
        }
        return value ?? throw HttpApiException.BadRequest("the body must be a JSON object, got null", code: "invalid_json");
    }

    /// <summary>
    /// The whole body, read from the request pipe. The shutdown's cutoff cancels the pending read
    /// rather than the read's token: what was read is still consumed, so Kestrel's body reader stays
    /// in a state it can drain and close cleanly.
    /// </summary>
    private static async Task<ArrayBufferWriter<byte>> ReadBodyAsync(HttpRequest request, long maxBytes, CancellationToken cutoff, CancellationToken aborted)
    {
        var reader = request.BodyReader;
        // Sized for the announced length (a guess without one), within the limit; it grows if a chunked body is longer.
        var body = new ArrayBufferWriter<byte>((int)Math.Max(1, Math.Min(request.ContentLength ?? 256, Math.Min(maxBytes, 1 << 20))));
        using var stop = cutoff.Register(static r => ((PipeReader)r!).CancelPendingRead(), reader);
        while (true)
        {
            var result = await reader.ReadAsync(aborted).ConfigureAwait(false);
            foreach (var segment in result.Buffer)
                body.Write(segment.Span);
            reader.AdvanceTo(result.Buffer.End);
            if (body.WrittenCount > maxBytes)
                throw TooLarge(maxBytes);
            if (result.IsCanceled)
            {
                // The rest of the body will not be read and the server is going away: the connection is not to be reused.
                request.HttpContext.Response.Headers.Connection = "close";
                throw new OperationCanceledException("the server is shutting down", cutoff);
            }
            if (result.IsCompleted)
                return body;
        }
    }

    /// <summary>The top-level field a JSON path ("$.suffix", "$.input_extra[0].text") is in, for OpenAI's param.</summary>
    private static string? FieldOf(string? path)
    {
        if (path is null || !path.StartsWith("$.", StringComparison.Ordinal) || path.Length == 2)
            return null;
        var end = path.AsSpan(2).IndexOfAny('.', '[');
        return end < 0 ? path[2..] : path.Substring(2, end);
    }

    private static HttpApiException TooLarge(long maxBytes) =>
        new(413, "invalid_request_error", $"the request body is larger than the limit of {maxBytes} bytes", code: "request_too_large");

    private static bool IsJson(string? contentType)
    {
        if (string.IsNullOrEmpty(contentType))
            return false;
        var semicolon = contentType.IndexOf(';', StringComparison.Ordinal);
        var media = (semicolon < 0 ? contentType : contentType[..semicolon]).Trim();
        return media.Equals("application/json", StringComparison.OrdinalIgnoreCase)
            || (media.StartsWith("application/", StringComparison.OrdinalIgnoreCase) && media.EndsWith("+json", StringComparison.OrdinalIgnoreCase));
    }

    /// <summary>
    /// JSON as code reads best: quotes, apostrophes, angle brackets and non-ASCII text written as
    /// themselves, not as \u0022-style escapes (the default encoder escapes what could be unsafe
    /// inside HTML; these bodies are application/json and text/event-stream). Control characters
    /// and lone surrogates are still escaped, so the output stays valid JSON.
    /// </summary>
    public static readonly JsonWriterOptions WriterOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>A writer for a JSON body or for server-sent events, with <see cref="WriterOptions"/>.</summary>
    public static Utf8JsonWriter CreateWriter(IBufferWriter<byte> output) => new(output, WriterOptions);

    public static async Task WriteJsonAsync<T>(HttpContext context, int status, T value, JsonTypeInfo<T> type)
    {
        context.Response.StatusCode = status;
        context.Response.ContentType = "application/json";
        var body = context.Response.BodyWriter;
        await using (var writer = CreateWriter(body))
            JsonSerializer.Serialize(writer, value, type);
        await body.FlushAsync(context.RequestAborted).ConfigureAwait(false);
    }

    public static ErrorResponse ErrorBody(HttpApiException e) =>
        new() { Error = new ErrorBody { Message = e.Message, Type = e.Type, Param = e.Param, Code = e.Code } };

    /// <summary>Answers with the error unless the response has started (then there is nothing left to do).</summary>
    public static async Task WriteErrorAsync(HttpContext context, HttpApiException error)
    {
        if (context.Response.HasStarted)
        {
            // A stream already under way: the error is its last event (OpenAI's streams then end with [DONE]).
            if (context.Response.ContentType?.StartsWith("text/event-stream", StringComparison.Ordinal) == true)
            {
                using var writer = CreateWriter(context.Response.BodyWriter);
                await WriteEventAsync(context, writer, ErrorBody(error), OpenAiJsonContext.Default.ErrorResponse).ConfigureAwait(false);
                if (context.Request.Path.StartsWithSegments("/v1", StringComparison.Ordinal))
                    await WriteDoneAsync(context).ConfigureAwait(false);
            }
            return;
        }
        context.Response.Clear();
        if (error.Status == StatusCodes.Status401Unauthorized)
            context.Response.Headers.WWWAuthenticate = "Bearer";
        await WriteJsonAsync(context, error.Status, ErrorBody(error), OpenAiJsonContext.Default.ErrorResponse).ConfigureAwait(false);
    }

    /// <summary>
    /// A generation as server-sent events: <paramref name="onEvent"/> writes what an event carries,
    /// <paramref name="onFinish"/> the final events; a generation the shutdown cut off gets an error
    /// event instead; OpenAI's streams then end with data: [DONE] (<paramref name="endWithDone"/>).
    /// A client that leaves ends the loop, which abandons the output and frees the sequence.
    /// </summary>
    public static async Task StreamEventsAsync(HttpContext context, GenerationOutput output,
        Func<Utf8JsonWriter, GenerationEvent, Task> onEvent, Func<Utf8JsonWriter, GenerationEvent, Task> onFinish, bool endWithDone)
    {
        StartEventStream(context);
        using var writer = CreateWriter(context.Response.BodyWriter);
        try
        {
            // Send the headers now: a client sees the stream open even while the request waits in the queue.
            await context.Response.BodyWriter.FlushAsync(context.RequestAborted).ConfigureAwait(false);
            await foreach (var e in output.WithCancellation(context.RequestAborted).ConfigureAwait(false))
            {
                await onEvent(writer, e).ConfigureAwait(false);
                if (!e.IsFinal)
                    continue;
                RequestRecord.SetUsage(context, e.Usage!.Value);
                if (e.FinishReason == FinishReason.Cancelled)
                    await WriteEventAsync(context, writer, ErrorBody(HttpApiException.ShuttingDown()), OpenAiJsonContext.Default.ErrorResponse).ConfigureAwait(false);
                else
                    await onFinish(writer, e).ConfigureAwait(false);
                break;
            }
            if (endWithDone)
                await WriteDoneAsync(context).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
        }
    }

    /// <summary>Starts a server-sent event stream: the status and headers go out with the first event.</summary>
    public static void StartEventStream(HttpContext context)
    {
        var response = context.Response;
        response.StatusCode = StatusCodes.Status200OK;
        response.ContentType = "text/event-stream; charset=utf-8";
        response.Headers.CacheControl = "no-cache";
        response.Headers["X-Accel-Buffering"] = "no";
        context.Features.Get<IHttpResponseBodyFeature>()?.DisableBuffering();
    }

    /// <summary>One "data: {json}\n\n" event, flushed at once.</summary>
    public static async Task WriteEventAsync<T>(HttpContext context, Utf8JsonWriter writer, T value, JsonTypeInfo<T> type)
    {
        var body = context.Response.BodyWriter;
        body.Write(DataPrefix);
        writer.Reset(body);
        JsonSerializer.Serialize(writer, value, type);
        writer.Flush();
        body.Write(EventEnd);
        await body.FlushAsync(context.RequestAborted).ConfigureAwait(false);
    }

    public static async Task WriteDoneAsync(HttpContext context)
    {
        var body = context.Response.BodyWriter;
        body.Write(DoneEvent);
        await body.FlushAsync(context.RequestAborted).ConfigureAwait(false);
    }

    /// <summary>Unix time in seconds.</summary>
    public static long Now() => DateTimeOffset.UtcNow.ToUnixTimeSeconds();
}
