using System.Net;
using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using InferenceServer.Client;
using InferenceServer.Protocol;
using InferenceServer.Tests;
using Microsoft.Extensions.Configuration;

namespace InferenceServer.Server.Tests;

/// <summary>
/// TLS through Kestrel's own configuration (Kestrel:Certificates:Default): gRPC negotiates
/// HTTP/2 by ALPN, the HTTP port answers over HTTPS, and plaintext is refused.
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class TlsTests(ServerFixture fixture)
{
    [Fact]
    public async Task Both_ports_serve_over_tls_with_the_configured_certificate()
    {
        using var temp = new TempFolder();
        using var certificate = SelfSigned();
        var pfx = temp.Combine("server.pfx");
        await File.WriteAllBytesAsync(pfx, certificate.Export(X509ContentType.Pfx, "test-password"));
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Kestrel:Certificates:Default:Path"] = pfx,
            ["Kestrel:Certificates:Default:Password"] = "test-password",
        }).Build();

        var state = new ServerState { State = ServingState.Serving };
        await using var server = await SecondServer.StartAsync(SecondServer.OptionsLike(fixture.Options) with { Tls = true },
            fixture.Model, state, configuration, TrustOnly(certificate));

        using (var health = await server.Client.GetAsync("/health"))
            Assert.Equal(HttpStatusCode.OK, health.StatusCode);

        using var client = new InferenceClient(server.GrpcAddress, handler: TrustOnly(certificate));
        var reply = await client.GenerateAsync(new GenerateRequest { Prompt = "def", MaxTokens = 3, Temperature = 0 });
        Assert.Equal(3, reply.Usage.CompletionTokens);

        // A plaintext client cannot talk to a TLS port.
        using var plain = new HttpClient();
        await Assert.ThrowsAsync<HttpRequestException>(() => plain.GetAsync(new Uri($"http://127.0.0.1:{server.Options.HttpPort}/health")));
        await fixture.AssertEngineIdleAsync();
    }

    private static X509Certificate2 SelfSigned()
    {
        using var key = RSA.Create(2048);
        var request = new CertificateRequest("CN=localhost", key, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        var names = new SubjectAlternativeNameBuilder();
        names.AddIpAddress(IPAddress.Loopback);
        names.AddDnsName("localhost");
        request.CertificateExtensions.Add(names.Build());
        return request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
    }

    private static SocketsHttpHandler TrustOnly(X509Certificate2 expected) => new()
    {
        SslOptions = new SslClientAuthenticationOptions
        {
            RemoteCertificateValidationCallback = (_, presented, _, _) =>
                presented is not null && presented.GetCertHashString() == expected.GetCertHashString(),
        },
    };
}
