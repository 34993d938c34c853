using System.Net;
using System.Net.Http.Headers;
using InferenceServer.Client;
using InferenceServer.Protocol;

namespace InferenceServer.Server.Tests;

/// <summary>
/// Hundreds of malformed or hostile requests (HttpCorpus, GrpcCorpus), each with the exact status it
/// must get: never a 500 or UNKNOWN for a client's mistake, an OpenAI error body over HTTP, and after
/// every case a server that still serves and an engine back to idle.
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class MalformedCorpusTests(ServerFixture fixture) : IDisposable
{
    private readonly HttpClient _http = new() { BaseAddress = fixture.HttpAddress };
    private readonly HttpClient _grpcRaw = GrpcRaw.CreateClient();
    private readonly InferenceClient _grpc = new(fixture.GrpcAddress);

    public static TheoryData<string> HttpCases => new(HttpCorpus.Cases.Keys);
    public static TheoryData<string> GrpcCases => new(GrpcCorpus.Cases.Keys);

    public void Dispose()
    {
        _http.Dispose();
        _grpcRaw.Dispose();
        _grpc.Dispose();
    }

    [Fact]
    public void The_corpus_has_hundreds_of_cases()
    {
        Assert.True(HttpCorpus.Cases.Count >= 300, $"{HttpCorpus.Cases.Count} HTTP cases");
        Assert.True(GrpcCorpus.Cases.Count >= 150, $"{GrpcCorpus.Cases.Count} gRPC cases");
    }

    [Theory]
    [MemberData(nameof(HttpCases))]
    public async Task Http(string name)
    {
        var c = HttpCorpus.Cases[name];
        if (c.Status == HttpCorpus.NoAnswer)
        {
            Assert.Empty(await RawHttp.ExchangeAsync(fixture.HttpAddress, c.Raw!, c.CloseSending, TimeSpan.FromSeconds(10)));
            await HttpTest.AssertStillServingAsync(_http, fixture, name);
            return;
        }
        using (var response = c.Raw is { } raw ? await RawHttp.SendAsync(fixture.HttpAddress, raw, c.CloseSending, TimeSpan.FromSeconds(10)) : await SendAsync(c))
        {
            if (c.Status == 200)
            {
                var body = await response.Content.ReadAsStringAsync();
                Assert.True(response.StatusCode == HttpStatusCode.OK, $"expected 200, got {(int)response.StatusCode}: {body}");
            }
            else if (c.ErrorBody)
            {
                var error = await HttpTest.AssertErrorAsync(response, (HttpStatusCode)c.Status, c.Code, c.Param);
                if (c.MessageContains is { } expected)
                    Assert.Contains(expected, error.GetProperty("message").GetString(), StringComparison.Ordinal);
            }
            else
            {
                Assert.Equal(c.Status, (int)response.StatusCode);
            }
        }
        await HttpTest.AssertStillServingAsync(_http, fixture, name);
    }

    [Theory]
    [MemberData(nameof(GrpcCases))]
    public async Task Grpc(string name)
    {
        var c = GrpcCorpus.Cases[name];
        var result = await GrpcRaw.CallAsync(_grpcRaw, fixture.GrpcAddress, c.Body, c.Method, c.Encoding, c.Timeout, c.ContentType);
        Assert.True((int)result.HttpStatus == c.HttpStatus, $"expected HTTP {c.HttpStatus}, got {(int)result.HttpStatus}");
        if (c.Status is { } status)
        {
            Assert.True(result.Status == status, $"expected {status}, got {result.Status?.ToString() ?? "no grpc-status"}: {result.Message}");
            if (c.MessageContains is { } expected)
                Assert.Contains(expected, result.Message, StringComparison.Ordinal);
            // INTERNAL is the answer to a malformed call, said as such; "internal error: ..." is a failure the server did not expect.
            if (status == GrpcStatus.Internal)
                Assert.False(result.Message?.StartsWith("internal error", StringComparison.Ordinal) == true, result.Message);
        }
        Assert.Equal(2, (await _grpc.GenerateAsync(new GenerateRequest { Prompt = "ok", MaxTokens = 2, Temperature = 0 })).TokenIds.Count);
        await fixture.AssertEngineIdleAsync();
    }

    private async Task<HttpResponseMessage> SendAsync(HttpCase c)
    {
        using var request = new HttpRequestMessage(new HttpMethod(c.Method), c.Path);
        if (c.Body.Length > 0 || c.ContentType is not null)
        {
            request.Content = new ByteArrayContent(c.Body);
            if (c.ContentType is not null)
                request.Content.Headers.ContentType = MediaTypeHeaderValue.Parse(c.ContentType);
        }
        return await _http.SendAsync(request);
    }
}
