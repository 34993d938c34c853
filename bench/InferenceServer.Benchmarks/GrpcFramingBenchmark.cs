using System.Buffers;
using BenchmarkDotNet.Attributes;
using InferenceServer.Protocol;
using InferenceServer.Server.Grpc;

namespace InferenceServer.Benchmarks;

/// <summary>
/// The gRPC layer's per-message work for a streamed token: framing and serializing one delta
/// (a reused GenerateResponse: a few characters of text and one token id) into the response
/// writer, and on the way in, cutting a frame off a buffer and parsing the request.
/// </summary>
public class GrpcFramingBenchmark
{
    private readonly GenerateResponse _delta = new() { Text = "    ret", TokenIds = { 1234 } };
    private readonly FixedBufferWriter _writer = new(4096);
    private ReadOnlySequence<byte> _frame;

    [GlobalSetup]
    public void Setup()
    {
        var writer = new ArrayBufferWriter<byte>();
        GrpcFraming.WriteMessage(writer, new GenerateRequest { Prompt = "def fibonacci(n):\n    ", MaxTokens = 32, Temperature = 0 });
        _frame = new ReadOnlySequence<byte>(writer.WrittenMemory);
    }

    [Benchmark]
    public int WriteDelta()
    {
        _writer.Reset();
        _delta.TokenIds[0] = 1235;
        GrpcFraming.WriteMessage(_writer, _delta);
        return _writer.Written;
    }

    [Benchmark]
    public long ReadFrame()
    {
        var buffer = _frame;
        GrpcFraming.TryReadFrame(ref buffer, 1 << 20, out var payload);
        return payload.Length;
    }

    [Benchmark]
    public int ReadAndParseRequest()
    {
        var buffer = _frame;
        GrpcFraming.TryReadFrame(ref buffer, 1 << 20, out var payload);
        return GenerateRequest.Parser.ParseFrom(payload).MaxTokens;
    }

    /// <summary>An IBufferWriter over one array, reset between messages (as a pipe's memory is reused).</summary>
    private sealed class FixedBufferWriter(int size) : IBufferWriter<byte>
    {
        private readonly byte[] _buffer = new byte[size];

        public int Written { get; private set; }

        public void Reset() => Written = 0;

        public void Advance(int count) => Written += count;

        public Memory<byte> GetMemory(int sizeHint = 0) => _buffer.AsMemory(Written);

        public Span<byte> GetSpan(int sizeHint = 0) => _buffer.AsSpan(Written);
    }
}
