using System.Buffers.Binary;
using Google.Protobuf;
using InferenceServer.Protocol;
using Grpc.Health.V1;

namespace InferenceServer.Server.Tests;

/// <summary>One malformed or hostile gRPC call and the status it must end with.</summary>
internal sealed record GrpcCase
{
    public required string Name { get; init; }
    public string Method { get; init; } = GrpcRaw.GenerateMethod;
    public required byte[] Body { get; init; }

    /// <summary>The expected grpc-status; null where the call is refused as plain HTTP (<see cref="HttpStatus"/>).</summary>
    public GrpcStatus? Status { get; init; }

    public int HttpStatus { get; init; } = 200;
    public string? Encoding { get; init; }
    public string? Timeout { get; init; }
    public string? ContentType { get; init; } = "application/grpc";

    /// <summary>Text the grpc-message must contain, where it matters.</summary>
    public string? MessageContains { get; init; }
}

/// <summary>
/// The gRPC corpus, generated: broken frames for every unary method, out-of-range and missing
/// fields, invalid UTF-8 in strings, unknown methods, content types, encodings and grpc-timeout values.
/// </summary>
internal static class GrpcCorpus
{
    private const string Service = "/inference.v1.Inference/";
    private const int MaxMessageBytes = 1 << 20; // the fixture's limit

    /// <summary>A small request each method serves.</summary>
    private static readonly (string Method, IMessage Valid)[] Methods =
    [
        (Service + "Generate", Greedy("x", 2)),
        (Service + "GenerateStream", Greedy("x", 2)),
        (Service + "Tokenize", new TokenizeRequest { Text = "x" }),
        (Service + "Detokenize", new DetokenizeRequest { TokenIds = { 97 } }),
        (Service + "ListModels", new ListModelsRequest()),
        (Service + "GetModelInfo", new GetModelInfoRequest()),
        ("/grpc.health.v1.Health/Check", new HealthCheckRequest()),
    ];

    // Byte sequences that are not UTF-8 (the last two: an encoded surrogate, and a code point past U+10FFFF).
    private static readonly (string Name, byte[] Bytes)[] NotUtf8 =
        [("FF", [0xFF]), ("C3 28", [0xC3, 0x28]), ("C0 AF", [0xC0, 0xAF]), ("ED A0 80", [0xED, 0xA0, 0x80]), ("F4 90 80 80", [0xF4, 0x90, 0x80, 0x80])];

    // After the tables above: static fields are initialized in the order they are written.
    public static IReadOnlyDictionary<string, GrpcCase> Cases { get; } = Build();

    private static Dictionary<string, GrpcCase> Build()
    {
        var table = new CaseTable<GrpcCase>(c => c.Name);
        Frames(table.Add);
        Fields(table.Add);
        Text(table.Add);
        Calls(table.Add);
        return table.Cases;
    }

    private static void Frames(Action<GrpcCase> add)
    {
        foreach (var (method, valid) in Methods)
        {
            var frame = GrpcRaw.Frame(valid);
            var payload = valid.ToByteArray();
            var name = method[(method.LastIndexOf('/') + 1)..];
            void Case(string what, byte[] body, GrpcStatus? status, string? encoding = null, string? contentType = "application/grpc", int http = 200) =>
                add(new GrpcCase { Name = $"{name}: {what}", Method = method, Body = body, Status = status, Encoding = encoding, ContentType = contentType, HttpStatus = http });

            Case("no message", [], GrpcStatus.Internal);
            Case("half a frame header", [0, 0, 0], GrpcStatus.Internal);
            Case("frame shorter than its length", [.. Header(0, 100), .. new byte[10]], GrpcStatus.Internal);
            Case("not protobuf", GrpcRaw.Frame([0xFF, 0xFF, 0xFF]), GrpcStatus.Internal);
            Case("wire type 7", GrpcRaw.Frame([0x0F]), GrpcStatus.Internal);
            Case("field longer than the message", GrpcRaw.Frame([0x12, 0x7F, 0x61]), GrpcStatus.Internal);
            Case("varint of eleven bytes", GrpcRaw.Frame([0x08, .. Enumerable.Repeat((byte)0xFF, 10), 0x01]), GrpcStatus.Internal);
            Case("end of a group never started", GrpcRaw.Frame([0x0C]), GrpcStatus.Internal);
            Case("length one past the limit", Header(0, MaxMessageBytes + 1), GrpcStatus.ResourceExhausted);
            Case("length 0xFFFFFFFF", Header(0, uint.MaxValue), GrpcStatus.ResourceExhausted);
            // Compressed without naming the compression is a broken call; compressed with one we do not speak is UNIMPLEMENTED.
            Case("compressed flag", [.. Header(1, (uint)payload.Length), .. payload], GrpcStatus.Internal);
            Case("compressed with grpc-encoding deflate", [.. Header(1, (uint)payload.Length), .. payload], GrpcStatus.Unimplemented, encoding: "deflate");
            Case("grpc-encoding gzip and a compressed message that is not gzip", [.. Header(1, 3), 1, 2, 3], GrpcStatus.Internal, encoding: "gzip");
            Case("flag 2", [.. Header(2, (uint)payload.Length), .. payload], GrpcStatus.Internal);
            Case("flag 0x80", [.. Header(0x80, (uint)payload.Length), .. payload], GrpcStatus.Internal);
            // One request message per call: a second one, or a piece of one, is a broken call (as grpc-go answers).
            Case("two messages", [.. frame, .. frame], GrpcStatus.Internal);
            Case("stray bytes after the message", [.. frame, 0, 0], GrpcStatus.Internal);
            // grpc-encoding says how compressed messages are compressed; these messages are not.
            Case("grpc-encoding gzip", frame, GrpcStatus.Ok, encoding: "gzip");
            Case("grpc-encoding deflate", frame, GrpcStatus.Ok, encoding: "deflate");
            Case("Content-Type application/json", frame, null, contentType: "application/json", http: 415);
            Case("Content-Type text/plain", frame, null, contentType: "text/plain", http: 415);
            Case("no Content-Type", frame, null, contentType: null, http: 415);
        }
    }

    private static void Fields(Action<GrpcCase> add)
    {
        void Generate(string what, GenerateRequest request, GrpcStatus status, string method = "Generate") =>
            add(new GrpcCase { Name = $"{method}: {what}", Method = Service + method, Body = GrpcRaw.Frame(request), Status = status });
        var invalid = GrpcStatus.InvalidArgument;

        foreach (var value in (int[])[-1, int.MinValue])
            Generate($"max_tokens {value}", Greedy("x", value), invalid);
        Generate("max_tokens 600", Greedy("x", 600), invalid);
        Generate("max_tokens 2147483646", Greedy("x", int.MaxValue - 1), invalid);
        foreach (var method in (string[])["Generate", "GenerateStream"])
        {
            // The prompt plus max_tokens overflows int32.
            Generate($"max_tokens {int.MaxValue}", Greedy("x", int.MaxValue), invalid, method);
            Generate("max_tokens 2147483640 after ten prompt tokens", Greedy("0123456789", int.MaxValue - 7), invalid, method);
            Generate("100,000 stop strings", Greedy("x", 2, r => r.Stop.Add(Stops(100_000))), invalid, method);
            Generate("no input", new GenerateRequest { MaxTokens = 2 }, invalid, method: method);
        }
        Generate("7 stop strings", Greedy("x", 2, r => r.Stop.Add(Stops(7))), GrpcStatus.Ok);
        foreach (var value in (int[])[int.MaxValue, int.MinValue])
            Generate($"priority {value}", Greedy("x", 2, r => r.Priority = value), invalid);

        (string Field, Action<GenerateRequest, float> Set, float[] Values)[] floats =
        [
            ("temperature", (r, v) => r.Temperature = v, [-1, 100.5f, float.NaN, float.PositiveInfinity, float.MaxValue]),
            ("top_p", (r, v) => r.TopP = v, [0, -1, 1.5f, float.NaN]),
            ("min_p", (r, v) => r.MinP = v, [-0.5f, 1.5f, float.NaN]),
            ("repetition_penalty", (r, v) => r.RepetitionPenalty = v, [0, -1, 11, float.NaN, float.NegativeInfinity]),
            ("frequency_penalty", (r, v) => r.FrequencyPenalty = v, [3, -3, float.NaN]),
            ("presence_penalty", (r, v) => r.PresencePenalty = v, [3, -3, float.PositiveInfinity]),
        ];
        foreach (var (field, set, values) in floats)
        {
            foreach (var value in values)
                Generate($"{field} {value}", Greedy("x", 2, r => set(r, value)), invalid);
        }
        foreach (var value in (int[])[-1, int.MinValue])
            Generate($"top_k {value}", Greedy("x", 2, r => r.TopK = value), invalid);
        foreach (var value in (int[])[-1, 21, int.MaxValue, int.MinValue])
            Generate($"logprobs {value}", Greedy("x", 2, r => r.Logprobs = value), invalid);
        foreach (var value in (int[])[-1, 261, int.MaxValue, int.MinValue])
        {
            Generate($"stop token id {value}", Greedy("x", 2, r => r.StopTokenIds.Add(value)), invalid);
            Generate($"prompt token id {value}", new GenerateRequest { PromptTokenIds = new TokenIds { Ids = { value } }, MaxTokens = 2 }, invalid);
        }
        Generate("empty prompt token ids", new GenerateRequest { PromptTokenIds = new TokenIds(), MaxTokens = 2 }, invalid);
        Generate("600 prompt token ids", new GenerateRequest { PromptTokenIds = new TokenIds { Ids = { Enumerable.Repeat(97, 600) } }, MaxTokens = 2 }, invalid);
        Generate("empty prompt", Greedy("", 2), invalid);
        Generate("prompt longer than the context", Greedy(new string('x', 600), 2), invalid);
        Generate("infill longer than the context", new GenerateRequest { Infill = new Infill { Prefix = new string('x', 300), Suffix = new string('y', 300) }, MaxTokens = 2 }, invalid);
        Generate("empty stop string", Greedy("x", 2, r => r.Stop.Add("")), invalid);
        Generate("unknown model", Greedy("x", 2, r => r.Model = "gpt-4"), GrpcStatus.NotFound);
        Generate("seed 2^64-1 is valid", Greedy("x", 2, r => r.Seed = ulong.MaxValue), GrpcStatus.Ok);

        void Other(string what, string method, IMessage request, GrpcStatus status) =>
            add(new GrpcCase { Name = $"{method}: {what}", Method = Service + method, Body = GrpcRaw.Frame(request), Status = status });
        foreach (var value in (int[])[-1, 261, int.MaxValue, int.MinValue])
            Other($"token id {value}", "Detokenize", new DetokenizeRequest { TokenIds = { 97, value } }, invalid);
        Other("unknown model", "Detokenize", new DetokenizeRequest { Model = "gpt-4", TokenIds = { 97 } }, GrpcStatus.NotFound);
        Other("unknown model", "Tokenize", new TokenizeRequest { Model = "gpt-4", Text = "x" }, GrpcStatus.NotFound);
        Other("unknown model", "GetModelInfo", new GetModelInfoRequest { Model = "gpt-4" }, GrpcStatus.NotFound);
        add(new GrpcCase { Name = "Health/Check: unknown service", Method = "/grpc.health.v1.Health/Check", Body = GrpcRaw.Frame(new HealthCheckRequest { Service = "x.Y" }), Status = GrpcStatus.NotFound });
    }

    private static void Text(Action<GrpcCase> add)
    {
        // A string field that is not UTF-8 is refused before the message is parsed (the parser would
        // silently put U+FFFD in its place): INVALID_ARGUMENT naming the field.
        byte[] greedy = [0x28, 0x02, 0x35, 0, 0, 0, 0]; // max_tokens 2, temperature 0
        (string Field, string Method, Func<byte[], byte[]> Payload)[] fields =
        [
            ("prompt", "Generate", b => [.. String(0x12, b), .. greedy]),
            ("model", "Generate", b => [.. String(0x0A, b), .. String(0x12, "x"u8.ToArray()), .. greedy]),
            ("stop", "Generate", b => [.. String(0x12, "x"u8.ToArray()), .. String(0x72, b), .. greedy]),
            ("request_id", "Generate", b => [.. String(0x12, "x"u8.ToArray()), 0x8A, 0x01, (byte)b.Length, .. b, .. greedy]),
            ("infill prefix", "Generate", b => [.. Nested(0x22, String(0x0A, b)), .. greedy]),
            ("infill suffix", "GenerateStream", b => [.. Nested(0x22, [.. String(0x0A, "x"u8.ToArray()), .. String(0x12, b)]), .. greedy]),
            ("text", "Tokenize", b => String(0x12, b)),
            ("model", "GetModelInfo", b => String(0x0A, b)),
        ];
        foreach (var (field, method, payload) in fields)
        {
            foreach (var (name, bytes) in NotUtf8)
                add(new GrpcCase { Name = $"{method}: {field} with bytes {name}", Method = Service + method, Body = GrpcRaw.Frame(payload(bytes)), Status = GrpcStatus.InvalidArgument, MessageContains = "is not valid UTF-8" });
        }
    }

    private static void Calls(Action<GrpcCase> add)
    {
        var frame = GrpcRaw.Frame(Greedy("x", 2));
        foreach (var method in (string[])[Service + "Nope", Service, Service + "generate", "/inference.v2.Inference/Generate", "/", Service + "Generate/x", "/grpc.health.v1.Health/Nope", "/" + new string('a', 4000)])
        {
            var shown = method.Length > 60 ? $"/ and {method.Length - 1} characters" : method;
            add(new GrpcCase { Name = $"unknown method {shown}", Method = method, Body = frame, Status = GrpcStatus.Unimplemented });
        }
        // grpc-timeout: at most 8 digits and a unit. Long deadlines are valid, however long; a
        // malformed one is ignored (the call has no deadline), as Grpc.AspNetCore does.
        foreach (var timeout in (string[])["99999999S", "99999999M", "99999999H"])
            add(new GrpcCase { Name = $"grpc-timeout {timeout}", Body = frame, Status = GrpcStatus.Ok, Timeout = timeout });
        foreach (var timeout in (string[])["99999999m", "99999999u", "1H", "00000001H"])
            add(new GrpcCase { Name = $"grpc-timeout {timeout}", Body = frame, Status = GrpcStatus.Ok, Timeout = timeout });
        foreach (var timeout in (string[])["S", "1", "1x", "-1S", "+1S", "123456789S", "1.5S", "abcS", "1s", "1SS", "0x10S"])
            add(new GrpcCase { Name = $"grpc-timeout '{timeout}'", Body = frame, Status = GrpcStatus.Ok, Timeout = timeout });
    }

    private static GenerateRequest Greedy(string prompt, int maxTokens, Action<GenerateRequest>? set = null)
    {
        var request = new GenerateRequest { Prompt = prompt, MaxTokens = maxTokens, Temperature = 0 };
        set?.Invoke(request);
        return request;
    }

    private static IEnumerable<string> Stops(int count) => Enumerable.Range(0, count).Select(i => $"#{i:x}#");

    private static byte[] Header(byte flag, uint length)
    {
        var header = new byte[5];
        header[0] = flag;
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(1), length);
        return header;
    }

    private static byte[] String(byte tag, byte[] bytes) => [tag, (byte)bytes.Length, .. bytes];

    private static byte[] Nested(byte tag, byte[] message) => [tag, (byte)message.Length, .. message];
}
