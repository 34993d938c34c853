using System.Text;

namespace InferenceServer.Server.Tests;

/// <summary>One malformed or hostile HTTP request and the answer it must get.</summary>
internal sealed record HttpCase
{
    public required string Name { get; init; }

    /// <summary>The expected HTTP status, or <see cref="HttpCorpus.NoAnswer"/>.</summary>
    public required int Status { get; init; }

    public string Method { get; init; } = "POST";
    public string Path { get; init; } = "/v1/completions";
    public string? ContentType { get; init; } = "application/json";
    public byte[] Body { get; init; } = [];

    /// <summary>The whole request, written to a socket as it is (instead of through HttpClient).</summary>
    public byte[]? Raw { get; init; }

    /// <summary>With <see cref="Raw"/>: close the sending side after it, so the body ends there.</summary>
    public bool CloseSending { get; init; }

    /// <summary>An OpenAI error body is expected (false where Kestrel answers before the application sees the request).</summary>
    public bool ErrorBody { get; init; } = true;

    public string? Code { get; init; }
    public string? Param { get; init; }

    /// <summary>Text the error message must contain (e.g. the context length it names).</summary>
    public string? MessageContains { get; init; }
}

/// <summary>
/// The HTTP corpus, generated: wrong JSON types for every field of both generation endpoints,
/// out-of-range numbers, invalid text, bad JSON, routes, methods, content types and broken framing.
/// The fixture's model is "tiny-coder": 512 tokens of context, one token per byte.
/// </summary>
internal static class HttpCorpus
{
    public const int Context = 512;
    private const string Completions = "/v1/completions", Infill = "/infill";
    private const string IntMax = "2147483647", IntMin = "-2147483648";

    private static readonly string[] StringWrong = ["5", "true", "{}", "[]"];
    private static readonly string[] IntWrong = ["\"5\"", "true", "1.5", "{}", "[]", "2147483648", "-2147483649"];
    private static readonly string[] LongWrong = ["\"5\"", "true", "1.5", "{}", "9223372036854775808"];
    private static readonly string[] DoubleWrong = ["\"0.5\"", "true", "{}", "[]"];
    private static readonly string[] BoolWrong = ["\"true\"", "1", "0", "{}", "[]"];
    private static readonly string[] ObjectWrong = ["\"x\"", "5", "[]", "true"];

    // Each endpoint's typed fields by JSON type (prompt, stop and logit_bias take several shapes and have their own cases).
    private static readonly (string Path, string[] Strings, string[] Ints, string[] Longs, string[] Doubles, string[] Bools, string[] Objects)[] Fields =
    [
        (Completions, ["model", "suffix", "user"], ["max_tokens", "top_k", "logprobs", "n", "best_of"], ["seed"],
            ["temperature", "top_p", "min_p", "frequency_penalty", "presence_penalty", "repetition_penalty"],
            ["echo", "stream", "ignore_eos", "token_healing"], ["stream_options"]),
        (Infill, ["input_prefix", "input_suffix", "prompt"], ["n_predict", "top_k"], ["seed"],
            ["temperature", "top_p", "min_p", "repeat_penalty", "presence_penalty", "frequency_penalty"],
            ["stream", "ignore_eos", "token_healing"], []),
    ];

    // Text a JSON string must not carry: lone surrogates as escapes, and bytes that are not UTF-8.
    private static readonly (string Name, byte[] Bytes)[] BadText =
    [
        ("lone high surrogate escape", "\\ud800"u8.ToArray()),
        ("lone low surrogate escape", "\\udc00"u8.ToArray()),
        ("surrogate escape inside text", "a\\ud800b"u8.ToArray()),
        ("two high surrogate escapes", "\\udbff\\udbff"u8.ToArray()),
        ("byte FF", [0xFF]),
        ("bad continuation C3 28", [0xC3, 0x28]),
        ("encoded surrogate ED A0 80", [0xED, 0xA0, 0x80]),
        ("overlong C0 AF", [0xC0, 0xAF]),
        ("truncated sequence E2 82", [(byte)'a', 0xE2, 0x82]),
    ];

    // After the tables above: static fields are initialized in the order they are written.
    public static IReadOnlyDictionary<string, HttpCase> Cases { get; } = Build();

    private static Dictionary<string, HttpCase> Build()
    {
        var table = new CaseTable<HttpCase>(c => c.Name);
        WrongTypes(table.Add);
        Shapes(table.Add);
        Ranges(table.Add);
        InvalidText(table.Add);
        BadJson(table.Add);
        RoutesAndMethods(table.Add);
        ContentTypes(table.Add);
        Framing(table.Add);
        return table.Cases;
    }

    private static void WrongTypes(Action<HttpCase> add)
    {
        foreach (var (path, strings, ints, longs, doubles, bools, objects) in Fields)
        {
            foreach (var (fields, values) in new[] { (strings, StringWrong), (ints, IntWrong), (longs, LongWrong), (doubles, DoubleWrong), (bools, BoolWrong), (objects, ObjectWrong) })
            {
                foreach (var field in fields)
                {
                    foreach (var value in values)
                        add(Bad($"{path} {field} = {value}", path, Body(path, field, value), code: "invalid_json"));
                }
            }
        }
        // stream_options.include_usage and input_extra's items are typed too.
        foreach (var value in BoolWrong)
            add(Bad($"{Completions} stream_options.include_usage = {value}", Completions, Body(Completions, "stream_options", $"{{\"include_usage\": {value}}}"), code: "invalid_json"));
        foreach (var value in (string[])["\"x\"", "5", "{}", "[5]", "[\"a\"]", "[{\"text\": 5}]", "[{\"filename\": []}]", "[[]]"])
            add(Bad($"{Infill} input_extra = {value}", Infill, Body(Infill, "input_extra", value), code: "invalid_json"));
    }

    private static void Shapes(Action<HttpCase> add)
    {
        string[] prompts = ["5", "true", "{}", "[{}]", "[true]", "[null]", "[[]]", "[\"a\", \"b\"]", "[1.5]", "[1, \"a\"]", "[2147483648]", "[[1], [2]]", "[[\"a\"]]", "\"\"", "[]"];
        foreach (var prompt in prompts)
            add(Bad($"{Completions} prompt = {prompt}", Completions, Body(Completions, "prompt", prompt), param: "prompt"));
        foreach (var ids in (string[])["[-1]", "[261]", $"[{IntMax}]", $"[{IntMin}]", "[[-1]]"])
            add(Bad($"{Completions} token ids outside the vocabulary {ids}", Completions, Body(Completions, "prompt", ids)));
        string[] stops = ["5", "true", "{}", "[5]", "[null]", "[[]]", "[{}]", "\"\"", "[\"\"]", "[\"a\", 5]"];
        foreach (var path in (string[])[Completions, Infill])
        {
            foreach (var stop in stops)
                add(Bad($"{path} stop = {stop}", path, Body(path, "stop", stop), param: "stop"));
            // OpenAI-style limits: a list as long as the body allows is refused, a handful is served.
            var many = "[" + string.Join(", ", Enumerable.Range(0, 100_000).Select(i => $"\"{i:x}\"")) + "]";
            add(Bad($"{path} 100,000 stop strings", path, Body(path, "stop", many), param: "stop"));
            add(Ok($"{path} 7 stop strings", path, Body(path, "stop", "[\"q\", \"w\", \"e\", \"r\", \"t\", \"y\", \"u\"]")));
        }
        // logit_bias: only an empty object (or nothing) is supported; anything else is refused.
        add(Bad($"{Completions} logit_bias with an entry", Completions, Body(Completions, "logit_bias", "{\"1\": 5}"), param: "logit_bias"));
        foreach (var value in (string[])["\"x\"", "5", "[1]", "true"])
            add(Bad($"{Completions} logit_bias = {value}", Completions, Body(Completions, "logit_bias", value), param: "logit_bias"));
    }

    private static void Ranges(Action<HttpCase> add)
    {
        var c = Completions;
        foreach (var value in (string[])["-1", IntMin])
            add(Bad($"{c} max_tokens = {value}", c, Body(c, "max_tokens", value), param: "max_tokens"));
        // Past the context (one prompt token plus max_tokens): a 400 that names the limit, also where the sum overflows int32.
        add(Bad($"{c} max_tokens = 512", c, Body(c, "max_tokens", "512")) with { MessageContains = "512" });
        add(Bad($"{c} max_tokens = 100000", c, Body(c, "max_tokens", "100000")) with { MessageContains = "512" });
        add(Ok($"{c} max_tokens = 511 fills the context", c, Body(c, "max_tokens", "511")));
        add(Bad($"{c} max_tokens = 2147483646", c, Body(c, "max_tokens", "2147483646")) with { MessageContains = "512" });
        // With a one-token prompt only int32's largest value overflows the sum; with ten tokens the last ten do.
        foreach (var (prompt, value) in new[] { ("a", IntMax), ("0123456789", IntMax), ("0123456789", "2147483640") })
        {
            var body = Encoding.UTF8.GetBytes($"{{\"prompt\": \"{prompt}\", \"max_tokens\": {value}");
            add(Bad($"{c} max_tokens = {value} after {prompt.Length} prompt tokens", c, [.. body, .. "}"u8]) with { MessageContains = "512" });
            add(Bad($"{c} max_tokens = {value} after {prompt.Length} prompt tokens, streamed", c, [.. body, .. ", \"stream\": true}"u8]) with { MessageContains = "512" });
        }
        // n_predict as large as the context or larger: until a stop or the end of the context, as a negative one.
        add(Ok($"{Infill} n_predict = {IntMax}", Infill, Body(Infill, "n_predict", IntMax)));
        add(Ok($"{Infill} n_predict = 2147483646, streamed", Infill, Body(Infill, "n_predict", "2147483646", "\"stream\": true")));
        add(Ok($"{Infill} n_predict = 512", Infill, Body(Infill, "n_predict", "512")));
        // llama.cpp's n_predict: any negative number runs to a stop or the end of the context.
        add(Ok($"{Infill} n_predict = {IntMin}", Infill, Body(Infill, "n_predict", IntMin)));

        (string Field, string[] Values)[] outOfRange =
        [
            ("temperature", ["-0.001", "100.5", "1e308", "-1e308"]),
            ("top_p", ["0", "-1", "1.0001", "1e308"]),
            ("top_k", ["-2", IntMin]),
            ("min_p", ["-0.1", "1.1"]),
            ("repetition_penalty", ["0", "-1", "10.5"]),
            ("frequency_penalty", ["2.5", "-2.5", "1e308"]),
            ("presence_penalty", ["2.5", "-2.5"]),
            ("logprobs", ["-1", "6", IntMax, IntMin]),
            ("n", ["0", "-1", "2", IntMax, IntMin]),
            ("best_of", ["0", "2", IntMax]),
        ];
        foreach (var (field, values) in outOfRange)
        {
            foreach (var value in values)
                add(Bad($"{c} {field} = {value}", c, Body(c, field, value), param: field));
        }
        (string Field, string Value)[] infillRange = [("temperature", "-1"), ("top_p", "2"), ("min_p", "2"), ("repeat_penalty", "0"), ("presence_penalty", "3"), ("frequency_penalty", "-3")];
        foreach (var (field, value) in infillRange)
            add(Bad($"{Infill} {field} = {value}", Infill, Body(Infill, field, value)));
        add(Bad($"{c} echo = true", c, Body(c, "echo", "true"), param: "echo"));
        add(Bad($"{c} prompt longer than the context", c, Body(c, "prompt", $"\"{new string('x', 600)}\"")));
        // /infill trims the prefix and suffix to the context, as llama.cpp does; only the middle cannot be trimmed.
        add(Ok($"{Infill} prefix longer than the context is trimmed", Infill, Body(Infill, "input_prefix", $"\"{new string('x', 600)}\"")));
        add(Bad($"{Infill} prompt (the middle) longer than the context", Infill, Body(Infill, "prompt", $"\"{new string('x', 600)}\"")));

        // Extreme values that are valid: served.
        foreach (var (field, value) in new[] { ("seed", "9223372036854775807"), ("seed", "-9223372036854775808"), ("top_k", "-1"), ("logprobs", "0"), ("n", "1"), ("best_of", "1") })
            add(Ok($"{c} {field} = {value} is valid", c, Body(c, field, value)));
        add(Ok($"{Infill} seed = -9223372036854775808 is valid", Infill, Body(Infill, "seed", "-9223372036854775808")));
    }

    private static void InvalidText(Action<HttpCase> add)
    {
        foreach (var (name, bytes) in BadText)
        {
            foreach (var field in (string[])["prompt", "stop", "suffix"])
                add(Bad($"{Completions} {field} with {name}", Completions, Body(Completions, field, bytes)));
            foreach (var field in (string[])["input_prefix", "input_suffix", "prompt", "stop"])
                add(Bad($"{Infill} {field} with {name}", Infill, Body(Infill, field, bytes)));
        }
        foreach (var (name, bytes) in BadText.Where(t => t.Name is "lone high surrogate escape" or "byte FF"))
        {
            add(Bad($"{Completions} prompt array with {name}", Completions, Json("{\"prompt\": [\""u8, bytes, "\"], \"max_tokens\": 2}"u8)));
            add(Bad($"{Completions} stop array with {name}", Completions, Json("{\"prompt\": \"a\", \"max_tokens\": 2, \"stop\": [\"x\", \""u8, bytes, "\"]}"u8)));
            add(Bad($"{Infill} input_extra text with {name}", Infill, Json("{\"input_prefix\": \"a\", \"n_predict\": 2, \"input_extra\": [{\"filename\": \"f.py\", \"text\": \""u8, bytes, "\"}]}"u8)));
        }
    }

    private static void BadJson(Action<HttpCase> add)
    {
        string[] documents =
        [
            "{", "{\"prompt\": \"a\",}", "{'prompt': 'a'}", "{prompt: \"a\"}", "{\"prompt\": \"a\"} x", "{\"prompt\": \"a\"}{\"prompt\": \"b\"}",
            "[]", "\"x\"", "1", "true", "null", "{\"prompt\": \"a\" /* comment */}", "{\"prompt\": \"a\", \"max_tokens\": NaN}",
            "{\"prompt\": \"a\", \"temperature\": Infinity}", "{\"prompt\": \"a\u0001\"}", "{\"prompt\": \"a\\q\"}", "{\"prompt\": \"\\u12\"}",
            "", "   ", "{\"prompt\": \"a\", \"max_tokens\": 01}", "{\"prompt\": \"a\", \"max_tokens\": +1}", "{\"prompt\": \"a\", \"max_tokens\": 1e400}",
            "{\"prompt\" \"a\"}",
        ];
        foreach (var path in (string[])[Completions, Infill])
        {
            // max_tokens is not an /infill field: an unknown field's number is skipped unread there.
            foreach (var document in documents.Where(d => path == Completions || !d.Contains("1e400", StringComparison.Ordinal)))
                add(Bad($"{path} body {Describe(document)}", path, Encoding.UTF8.GetBytes(document), code: "invalid_json"));
            // Nesting past the parser's depth limit, in an unknown field and in the fields that take any shape.
            foreach (var depth in (int[])[100, 100_000])
                add(Bad($"{path} nested {depth} deep in an unknown field", path, Body(path, "x", Nested(depth)), code: "invalid_json"));
            add(Bad($"{path} stop nested 1000 deep", path, Body(path, "stop", Nested(1000)), code: "invalid_json"));
        }
        add(Bad($"{Completions} prompt nested 1000 deep", Completions, Body(Completions, "prompt", Nested(1000)), code: "invalid_json"));
        add(Bad($"{Completions} empty object", Completions, "{}"u8.ToArray(), param: "prompt"));
        // /infill has no required field: an empty object is a request with every default.
        add(Ok($"{Infill} empty object", Infill, "{\"n_predict\": 2}"u8.ToArray()));
    }

    private static void RoutesAndMethods(Action<HttpCase> add)
    {
        (string Method, string Path)[] unknown =
        [
            ("GET", "/"), ("POST", "/"), ("GET", "/v1"), ("POST", "/v2/completions"), ("POST", "/v1/chat/completion"), ("POST", "/v1/embeddings"),
            ("POST", "/v1/completion"), ("POST", "/completions"), ("POST", "/infill/x"), ("GET", "/admin"), ("GET", "/admin/engine/x"),
            ("GET", "/health/x"), ("GET", "/metrics/x"), ("GET", "/v1/modelsx"), ("GET", "/%2e%2e/%2e%2e/etc/passwd"), ("DELETE", "/nothing"),
            ("GET", "/" + new string('a', 2000)),
        ];
        foreach (var (method, path) in unknown)
            add(new HttpCase { Name = $"{method} {Short(path)}", Status = 404, Method = method, Path = path, Code = "not_found", ContentType = null });
        foreach (var path in (string[])["/v1/models/gpt-4", "/v1/models/tiny-coder/extra", "/v1/models/" + new string('m', 2000), "/v1/models/%20"])
            add(new HttpCase { Name = $"GET {Short(path)}", Status = 404, Method = "GET", Path = path, Code = "model_not_found", ContentType = null });
        (string Method, string Path)[] wrongMethod =
        [
            ("GET", Completions), ("PUT", Completions), ("DELETE", Completions), ("PATCH", Completions), ("OPTIONS", Completions),
            ("GET", Infill), ("PUT", Infill), ("DELETE", Infill), ("POST", "/v1/models"), ("DELETE", "/v1/models"), ("PUT", "/v1/models/tiny-coder"),
            ("POST", "/health"), ("DELETE", "/health"), ("POST", "/admin/engine"), ("POST", "/metrics"),
        ];
        foreach (var (method, path) in wrongMethod)
            add(new HttpCase { Name = $"{method} {path}", Status = 405, Method = method, Path = path, Code = "method_not_allowed", ContentType = null });
    }

    private static void ContentTypes(Action<HttpCase> add)
    {
        string?[] refused = ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml", "application/jsonx", "text/json", "application/octet-stream", "image/json", null];
        foreach (var path in (string[])[Completions, Infill])
        {
            foreach (var type in refused)
                add(Bad($"{path} Content-Type {type ?? "missing"}", path, Body(path, "temperature", "0"), status: 415, code: "unsupported_media_type") with { ContentType = type });
            add(Bad($"{path} empty body without Content-Type", path, [], status: 415, code: "unsupported_media_type") with { ContentType = null });
            // Any application/*+json, with parameters: served.
            add(Ok($"{path} Content-Type application/merge-patch+json", path, Body(path, "temperature", "0")) with { ContentType = "application/merge-patch+json" });
            add(Ok($"{path} Content-Type with charset", path, Body(path, "temperature", "0")) with { ContentType = "application/json; charset=utf-8" });
        }
    }

    /// <summary>
    /// The status of a case the server cannot answer: the client closed its side in the middle of
    /// the body, which Kestrel takes as the client leaving. The request ends, logged as 499.
    /// </summary>
    public const int NoAnswer = 0;

    private static void Framing(Action<HttpCase> add)
    {
        var json = Body(Completions, "temperature", "0");
        HttpCase Raw(string name, int status, string headers, byte[] body, bool close = false, bool errorBody = true, string path = Completions) => new()
        {
            Name = name,
            Status = status,
            Raw = [.. Encoding.ASCII.GetBytes($"POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{headers}\r\n"), .. body],
            CloseSending = close,
            ErrorBody = errorBody,
        };
        const string Type = "Content-Type: application/json\r\n";
        foreach (var path in (string[])[Completions, Infill])
        {
            add(Raw($"{path} body shorter than Content-Length, then the client closes", NoAnswer, $"{Type}Content-Length: {json.Length + 50}\r\n", json, close: true, path: path));
            add(Raw($"{path} chunk size not hex", 400, $"{Type}Transfer-Encoding: chunked\r\n", "zz\r\n{}\r\n0\r\n\r\n"u8.ToArray(), path: path));
            add(Raw($"{path} chunk size overflows", 400, $"{Type}Transfer-Encoding: chunked\r\n", "fffffffffffffffffffff\r\n{}\r\n0\r\n\r\n"u8.ToArray(), path: path));
            add(Raw($"{path} chunk data longer than its size", 400, $"{Type}Transfer-Encoding: chunked\r\n", "1\r\n{}\r\n0\r\n\r\n"u8.ToArray(), path: path));
            add(Raw($"{path} chunked body cut off, then the client closes", NoAnswer, $"{Type}Transfer-Encoding: chunked\r\n", [.. "10\r\n"u8, .. json.AsSpan(0, 16), .. "\r\n"u8], close: true, path: path));
            add(Raw($"{path} Content-Length over the limit", 413, $"{Type}Content-Length: 2000000\r\n", [], path: path) with { Code = "request_too_large" });
        }
        // Kestrel refuses these before the application sees them: a status, no error body.
        add(Raw("Content-Length not a number", 400, $"{Type}Content-Length: abc\r\n", json, errorBody: false));
        add(Raw("Content-Length negative", 400, $"{Type}Content-Length: -5\r\n", json, errorBody: false));
        add(Raw("two different Content-Lengths", 400, $"{Type}Content-Length: 5\r\nContent-Length: 6\r\n", json, errorBody: false));
        add(Raw("final transfer coding not chunked", 400, $"{Type}Transfer-Encoding: gzip\r\n", json, errorBody: false));
        add(Raw("header line without a colon", 400, $"{Type}NoColonHere\r\nContent-Length: {json.Length}\r\n", json, errorBody: false));
        add(Raw("header too large", 431, $"{Type}X-Big: {new string('a', 40_000)}\r\nContent-Length: {json.Length}\r\n", json, errorBody: false));
        add(new HttpCase { Name = "request line garbage", Status = 400, Raw = "HELLO\r\n\r\n"u8.ToArray(), ErrorBody = false });
        add(new HttpCase { Name = "HTTP/1.1 without Host", Status = 400, Raw = "GET /v1/models HTTP/1.1\r\nConnection: close\r\n\r\n"u8.ToArray(), ErrorBody = false });
        add(new HttpCase { Name = "request line too long", Status = 414, Raw = Encoding.ASCII.GetBytes($"GET /{new string('a', 20_000)} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), ErrorBody = false });
    }

    private static HttpCase Bad(string name, string path, byte[] body, int status = 400, string? code = null, string? param = null) =>
        new() { Name = name, Status = status, Path = path, Body = body, Code = code, Param = param };

    private static HttpCase Ok(string name, string path, byte[] body) => new() { Name = name, Status = 200, Path = path, Body = body, ErrorBody = false };

    /// <summary>A small valid request to the endpoint with <paramref name="field"/> set to the raw JSON <paramref name="value"/>.</summary>
    private static byte[] Body(string path, string field, string value, string? extra = null) =>
        Json(Encoding.UTF8.GetBytes(Start(path, field) + $"\"{field}\": "), Encoding.UTF8.GetBytes(value), Encoding.UTF8.GetBytes((extra is null ? "" : ", " + extra) + "}"));

    /// <summary>The same with raw bytes inside the string value of <paramref name="field"/>.</summary>
    private static byte[] Body(string path, string field, byte[] text) =>
        Json(Encoding.UTF8.GetBytes(Start(path, field) + $"\"{field}\": \""), text, "\"}"u8);

    // The base request, without the field under test: a short prompt and two tokens.
    private static string Start(string path, string field)
    {
        var parts = path == Completions
            ? new List<(string, string)> { ("prompt", "\"a\""), ("max_tokens", "2") }
            : [("input_prefix", "\"def f(\""), ("input_suffix", "\")\""), ("n_predict", "2")];
        return "{" + string.Concat(parts.Where(p => p.Item1 != field).Select(p => $"\"{p.Item1}\": {p.Item2}, "));
    }

    private static byte[] Json(ReadOnlySpan<byte> before, ReadOnlySpan<byte> middle, ReadOnlySpan<byte> after) => [.. before, .. middle, .. after];

    private static string Nested(int depth) => new string('[', depth) + new string(']', depth);

    private static string Describe(string document) => document.Length == 0 ? "empty" : string.IsNullOrWhiteSpace(document) ? "whitespace" : Short(document);

    private static string Short(string text)
    {
        var printable = string.Concat(text.Select(ch => ch < ' ' ? $"\\u{(int)ch:x4}" : ch.ToString()));
        return printable.Length <= 48 ? printable : $"{printable[..40]}...({text.Length} chars)";
    }
}
