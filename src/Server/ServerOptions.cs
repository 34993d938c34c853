using Microsoft.Extensions.Logging;

namespace InferenceServer.Server;

/// <summary>How the server listens and what it accepts. Defaults bind to loopback only.</summary>
public sealed record ServerOptions
{
    public const int DefaultHttpPort = 8080;
    public const int DefaultGrpcPort = 50051;

    public string Host { get; init; } = "127.0.0.1";

    /// <summary>OpenAI-style HTTP and /health (HTTP/1.1 and HTTP/2).</summary>
    public int HttpPort { get; init; } = DefaultHttpPort;

    /// <summary>gRPC (HTTP/2 only, plaintext h2c unless TLS is configured).</summary>
    public int GrpcPort { get; init; } = DefaultGrpcPort;

    /// <summary>
    /// Both ports over TLS, with the certificate Kestrel's configuration names
    /// (Kestrel:Certificates:Default); gRPC then negotiates HTTP/2 by ALPN.
    /// </summary>
    public bool Tls { get; init; }

    /// <summary>When not empty, every request must carry one of these keys (HTTP: Bearer; gRPC: authorization metadata).</summary>
    public IReadOnlyList<string> ApiKeys { get; init; } = [];

    /// <summary>Largest HTTP request body.</summary>
    public long MaxRequestBodyBytes { get; init; } = 4 << 20;

    /// <summary>Largest gRPC message, either way.</summary>
    public int MaxMessageBytes { get; init; } = 4 << 20;

    /// <summary>Stop strings and priority a request may ask for.</summary>
    public RequestLimits Limits { get; init; } = new();

    /// <summary>max_tokens when a request gives none.</summary>
    public int DefaultMaxTokens { get; init; } = 16;

    /// <summary>How long a shutdown waits for requests in flight before the server ends them.</summary>
    public TimeSpan ShutdownGracePeriod { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>The least severe log entries written (one line per request at Information).</summary>
    public LogLevel LogLevel { get; init; } = LogLevel.Information;
}
