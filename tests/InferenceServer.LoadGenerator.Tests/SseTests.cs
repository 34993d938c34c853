using System.Net;
using System.Net.ServerSentEvents;
using System.Text;
using System.Text.Json;
using InferenceServer.LoadGenerator.Measurement;
using InferenceServer.LoadGenerator.Targets;

namespace InferenceServer.LoadGenerator.Tests;

public sealed class SseTests
{
    // What vLLM and our server send for a streamed completion with stream_options.include_usage.
    private const string Stream =
        ": keep-alive comment\r\n\r\n"
        + "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"choices\":[{\"index\":0,\"text\":\"def\",\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\r\n\r\n"
        + "data: {\"id\":\"cmpl-1\",\"choices\":[{\"index\":0,\"text\":\" f(x)\",\"finish_reason\":null}],\"usage\":null}\n\n"
        + "data: {\"id\":\"cmpl-1\",\"choices\":[{\"index\":0,\"text\":\":\\n\\treturn \\\"x\\\"\",\"finish_reason\":null}]}\n\n"
        + "data: {\"id\":\"cmpl-1\",\"choices\":[{\"index\":0,\"text\":\"\",\"finish_reason\":\"length\"}]}\n\n"
        + "data: {\"id\":\"cmpl-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":40,\"completion_tokens\":5,\"total_tokens\":45,\"prompt_tokens_details\":{\"cached_tokens\":32}}}\n\n"
        + "data: [DONE]\n\n";

    // The streams below go through the framework's parser (System.Net.ServerSentEvents), as the HTTP target reads them.
    [Fact]
    public async Task Events_are_the_same_however_the_bytes_are_split()
    {
        var bytes = Encoding.UTF8.GetBytes(Stream);
        var whole = await Events(bytes, bytes.Length);
        Assert.Equal(6, whole.Count);
        Assert.Equal("[DONE]", whole[^1]);
        Assert.StartsWith("{\"id\":\"cmpl-1\",\"object\"", whole[0], StringComparison.Ordinal);
        foreach (var size in new[] { 1, 2, 3, 7, 64 })
            Assert.Equal(whole, await Events(bytes, size));
    }

    [Fact]
    public async Task Data_lines_of_one_event_are_joined_and_other_fields_ignored()
    {
        var events = await Events(Encoding.UTF8.GetBytes("event: message\nid: 4\ndata:first\ndata: second\nretry: 10\n\ndata\n\ndataX: no\n\ndata: last"), 5);
        // The empty "data" field is an event with empty data; the last event has no blank line, so the stream ended inside it and it is dropped.
        Assert.Equal(["first\nsecond", ""], events);
    }

    [Fact]
    public void Chunks_give_text_presence_finish_reason_usage_and_errors()
    {
        var text = CompletionChunk.Parse("{\"choices\":[{\"index\":0,\"text\":\"x\",\"logprobs\":{\"tokens\":[\"x\"]},\"finish_reason\":null}],\"usage\":null}"u8);
        Assert.True(text.HasText);
        Assert.Null(text.FinishReason);
        Assert.Null(text.CompletionTokens);

        var finish = CompletionChunk.Parse("{\"choices\":[{\"text\":\"\",\"finish_reason\":\"stop\"}]}"u8);
        Assert.False(finish.HasText);
        Assert.Equal("stop", finish.FinishReason);

        // TGI sends an empty finish reason while generating.
        Assert.Null(CompletionChunk.Parse("{\"choices\":[{\"text\":\"a\",\"finish_reason\":\"\"}]}"u8).FinishReason);

        var usage = CompletionChunk.Parse("{\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3,\"prompt_tokens_details\":null}}"u8);
        Assert.Equal((12, 3, (int?)null), (usage.PromptTokens!.Value, usage.CompletionTokens!.Value, usage.CachedTokens));

        var cached = CompletionChunk.Parse("{\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3,\"prompt_tokens_details\":{\"cached_tokens\":8}},\"extra\":{\"a\":[1,{\"b\":2}]}}"u8);
        Assert.Equal(8, cached.CachedTokens);

        Assert.Equal("the server is shutting down", CompletionChunk.Parse("{\"error\":{\"message\":\"the server is shutting down\",\"type\":\"service_unavailable\"}}"u8).Error);
        Assert.ThrowsAny<JsonException>(() => CompletionChunk.Parse("not json"u8));
    }

    [Fact]
    public async Task Several_model_names_are_sent_in_turn_request_by_request()
    {
        using var handler = new FakeHandler(HttpStatusCode.OK, Stream, pieceSize: 64);
        await using var target = new OpenAiHttpTarget(new Uri("http://fake.test"), "base, sql,docs", null, handler);
        var sent = new List<string>();
        for (var i = 0; i < 5; i++)
        {
            using var body = JsonDocument.Parse(await target.Body(new LoadRequest { Prompt = "x", MaxTokens = 1 }).ReadAsStringAsync());
            sent.Add(body.RootElement.GetProperty("model").GetString()!);
        }
        Assert.Equal(["base", "sql", "docs", "base", "sql"], sent);
        Assert.Throws<ArgumentException>(() => new ModelNames(" , "));
        Assert.Null(new ModelNames(null).Next());
    }

    [Fact]
    public async Task The_http_target_reads_a_whole_stream_in_small_pieces()
    {
        using var handler = new FakeHandler(HttpStatusCode.OK, Stream, pieceSize: 5);
        await using var target = new OpenAiHttpTarget(new Uri("http://fake.test:8000"), "coder", "secret", handler);
        var record = await target.SendAsync(new LoadRequest { Prompt = "def f(x):", Suffix = "\nprint(f(2))\n", MaxTokens = 5, IgnoreEos = true, Stop = ["\n\n"] },
            CancellationToken.None);

        Assert.Equal(RequestOutcome.Completed, record.Outcome);
        // Three text chunks arrived, but the usage says five tokens: the server's count wins.
        Assert.Equal(5, record.OutputTokens);
        Assert.Equal(40, record.PromptTokens);
        Assert.Equal(32, record.CachedPromptTokens);
        Assert.Equal("length", record.FinishReason);
        Assert.NotNull(record.TimeToFirstTokenMs);
        Assert.True(record.EndMs >= record.TimeToFirstTokenMs);

        Assert.Equal("http://fake.test:8000/v1/completions", handler.Request!.RequestUri!.ToString());
        Assert.Equal("Bearer secret", handler.Request.Headers.Authorization!.ToString());
        using var body = JsonDocument.Parse(handler.Body!);
        var root = body.RootElement;
        Assert.Equal("coder", root.GetProperty("model").GetString());
        Assert.Equal("def f(x):", root.GetProperty("prompt").GetString());
        Assert.Equal("\nprint(f(2))\n", root.GetProperty("suffix").GetString());
        Assert.Equal(5, root.GetProperty("max_tokens").GetInt32());
        Assert.True(root.GetProperty("stream").GetBoolean());
        Assert.True(root.GetProperty("stream_options").GetProperty("include_usage").GetBoolean());
        Assert.True(root.GetProperty("ignore_eos").GetBoolean());
        Assert.Equal(0, root.GetProperty("temperature").GetDouble());
        Assert.Equal("\n\n", root.GetProperty("stop")[0].GetString());
    }

    [Fact]
    public async Task The_http_target_leaves_out_what_was_not_asked_for_and_accepts_a_v1_base()
    {
        using var handler = new FakeHandler(HttpStatusCode.OK, "data: {\"choices\":[{\"text\":\"a\",\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n", pieceSize: 1000);
        await using var target = new OpenAiHttpTarget(new Uri("http://fake.test/v1"), null, null, handler);
        var record = await target.SendAsync(new LoadRequest { Prompt = "x", MaxTokens = 1 }, CancellationToken.None);
        Assert.Equal(RequestOutcome.Completed, record.Outcome);
        // No usage chunk (a server without include_usage): the tokens seen are the count.
        Assert.Equal(1, record.OutputTokens);
        Assert.Null(record.PromptTokens);
        Assert.Equal("http://fake.test/v1/completions", handler.Request!.RequestUri!.ToString());
        Assert.Null(handler.Request.Headers.Authorization);
        using var body = JsonDocument.Parse(handler.Body!);
        Assert.False(body.RootElement.TryGetProperty("model", out _));
        Assert.False(body.RootElement.TryGetProperty("suffix", out _));
        Assert.False(body.RootElement.TryGetProperty("ignore_eos", out _));
        Assert.False(body.RootElement.TryGetProperty("stop", out _));
    }

    [Theory]
    [InlineData(HttpStatusCode.BadRequest, "{\"error\":{\"message\":\"model 'tiny' has no fill-in-the-middle tokens\",\"type\":\"invalid_request_error\"}}", "http:400", "model 'tiny' has no fill-in-the-middle tokens")]
    [InlineData(HttpStatusCode.TooManyRequests, "slow down", "http:429", "slow down")]
    [InlineData(HttpStatusCode.OK, "data: {\"choices\":[{\"text\":\"a\"}]}\n\n", "stream:truncated", null)]
    [InlineData(HttpStatusCode.OK, "data: {\"choices\":[{\"text\":\"a\"}]}\n\ndata: {\"error\":{\"message\":\"cancelled by the server\"}}\n\ndata: [DONE]\n\n", "stream:error", "cancelled by the server")]
    [InlineData(HttpStatusCode.OK, "data: {oops\n\n", "stream:malformed", null)]
    public async Task Failures_are_recorded_with_their_status(HttpStatusCode status, string body, string key, string? message)
    {
        using var handler = new FakeHandler(status, body, pieceSize: 3);
        await using var target = new OpenAiHttpTarget(new Uri("http://fake.test"), null, null, handler);
        var record = await target.SendAsync(new LoadRequest { Prompt = "x" }, CancellationToken.None);
        Assert.Equal(RequestOutcome.Failed, record.Outcome);
        Assert.Equal(key, record.ErrorKey);
        if (message is not null)
            Assert.Equal(message, record.ErrorMessage);
    }

    [Fact]
    public async Task Cancelling_mid_stream_is_a_cancellation_not_a_failure()
    {
        using var handler = new FakeHandler(HttpStatusCode.OK, "data: {\"choices\":[{\"text\":\"a\"}]}\n\n", pieceSize: 1000, hang: true);
        await using var target = new OpenAiHttpTarget(new Uri("http://fake.test"), null, null, handler);
        using var cancel = new CancellationTokenSource();
        var sending = target.SendAsync(new LoadRequest { Prompt = "x" }, cancel.Token);
        await handler.Hanging.Task.WaitAsync(TimeSpan.FromSeconds(5));
        await cancel.CancelAsync();
        var record = await sending.WaitAsync(TimeSpan.FromSeconds(5));
        Assert.Equal(RequestOutcome.Cancelled, record.Outcome);
        Assert.Equal(1, record.OutputTokens);
        Assert.NotNull(record.CancelToReturnMs);
    }

    private static async Task<List<string>> Events(byte[] bytes, int pieceSize)
    {
        await using var stream = new PiecewiseStream(bytes, pieceSize, null);
        var events = new List<string>();
        await foreach (var item in SseParser.Create(stream, (_, data) => Encoding.UTF8.GetString(data)).EnumerateAsync())
            events.Add(item.Data);
        return events;
    }

    /// <summary>Answers every request with one status and body, delivered a few bytes per read; can hang after the body.</summary>
    private sealed class FakeHandler(HttpStatusCode status, string body, int pieceSize, bool hang = false) : HttpMessageHandler
    {
        public HttpRequestMessage? Request { get; private set; }
        public string? Body { get; private set; }
        public TaskCompletionSource Hanging { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            Request = request;
            Body = request.Content is null ? null : await request.Content.ReadAsStringAsync(cancellationToken);
            return new HttpResponseMessage(status) { Content = new StreamContent(new PiecewiseStream(Encoding.UTF8.GetBytes(body), pieceSize, hang ? Hanging : null)) };
        }
    }

    /// <summary>A read-only stream that hands out at most <paramref name="pieceSize"/> bytes per read, then ends or waits forever.</summary>
    private sealed class PiecewiseStream(byte[] bytes, int pieceSize, TaskCompletionSource? hanging) : Stream
    {
        private int _position;

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => bytes.Length;
        public override long Position { get => _position; set => throw new NotSupportedException(); }

        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException("async only");

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            if (_position == bytes.Length)
            {
                if (hanging is null)
                    return 0;
                hanging.TrySetResult();
                await Task.Delay(Timeout.Infinite, cancellationToken);
            }
            var n = Math.Min(Math.Min(pieceSize, buffer.Length), bytes.Length - _position);
            bytes.AsMemory(_position, n).CopyTo(buffer);
            _position += n;
            return n;
        }

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override void Flush()
        {
        }

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}
