using BenchmarkDotNet.Attributes;
using Google.Protobuf;
using InferenceServer.Protocol;
using InferenceServer.Server.Grpc;

namespace InferenceServer.Benchmarks;

/// <summary>
/// What the gRPC port adds of its own to every request before the library hands it over: the
/// UTF-8 check of its string fields (<see cref="Utf8Fields"/>), next to the parse it precedes,
/// on a fill-in-the-middle request of the size an editor sends (1,500 characters before the
/// cursor, 500 after, and stop strings). Framing and serializing are the library's.
/// </summary>
public class GrpcRequestCheckBenchmark
{
    private byte[] _request = [];

    [GlobalSetup]
    public void Setup()
    {
        var line = "    total = sum(value for value in values if value is not None)\n";
        var request = new GenerateRequest
        {
            Infill = new Infill { Prefix = string.Concat(Enumerable.Repeat(line, 1500 / line.Length)), Suffix = string.Concat(Enumerable.Repeat(line, 500 / line.Length)) },
            MaxTokens = 64,
            Temperature = 0,
            Stop = { "\n\n", "\ndef ", "\nclass " },
        };
        _request = request.ToByteArray();
    }

    [Benchmark(Baseline = true)]
    public int Parse() => GenerateRequest.Parser.ParseFrom(_request).MaxTokens;

    [Benchmark]
    public int CheckUtf8ThenParse()
    {
        if (Utf8Fields.FindInvalid(GenerateRequest.Descriptor, new(_request)) is not null)
            return -1;
        return GenerateRequest.Parser.ParseFrom(_request).MaxTokens;
    }
}
