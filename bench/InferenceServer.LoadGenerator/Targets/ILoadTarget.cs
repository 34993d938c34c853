using InferenceServer.LoadGenerator.Measurement;

namespace InferenceServer.LoadGenerator.Targets;

/// <summary>One generation as a workload asks for it, whatever the protocol.</summary>
public sealed record LoadRequest
{
    /// <summary>The prompt text; with <see cref="Suffix"/>, the prefix to fill after.</summary>
    public required string Prompt { get; init; }

    /// <summary>Fill in the middle between <see cref="Prompt"/> and this text; null for a plain completion.</summary>
    public string? Suffix { get; init; }

    public int MaxTokens { get; init; } = 16;
    public IReadOnlyList<string> Stop { get; init; } = [];

    /// <summary>Generate all <see cref="MaxTokens"/> even past end-of-sequence, where the protocol allows it.</summary>
    public bool IgnoreEos { get; init; }

    public double Temperature { get; init; }

    /// <summary>
    /// Stream the answer (SSE over HTTP, GenerateStream over gRPC); false asks for the whole answer in
    /// one response (gRPC's unary Generate), which times only the end of the request.
    /// </summary>
    public bool Stream { get; init; } = true;
}

/// <summary>
/// A server (or the engine, in-process) that takes streamed generations. <see cref="SendAsync"/>
/// never throws for what the server does: errors and cancellation come back in the record.
/// </summary>
public interface ILoadTarget : IAsyncDisposable
{
    /// <summary>"grpc", "http" or "inprocess".</summary>
    string Kind { get; }

    /// <summary>Where it is, for the report.</summary>
    string Address { get; }

    Task<RequestRecord> SendAsync(LoadRequest request, CancellationToken cancellationToken);
}
