using System.Text.Json;

namespace InferenceServer.Peers;

/// <summary>
/// What one peer engine measured (the format llamacpp.mjs writes too): per level, every request's
/// prompt length and the arrival time of each output token after the request was sent.
/// </summary>
internal sealed record EngineResult
{
    public required string Engine { get; init; }
    public int Threads { get; init; }
    public required List<EngineLevel> Levels { get; init; }

    public static EngineResult Load(string path) =>
        JsonSerializer.Deserialize<EngineResult>(File.ReadAllText(path), PromptSet.Json) ?? throw new UsageException($"{path}: empty result");
}

internal sealed record EngineLevel
{
    public required int Streams { get; init; }
    public required double WallMs { get; init; }
    public required List<EngineRequest> Requests { get; init; }
}

internal sealed record EngineRequest
{
    public required int PromptTokens { get; init; }
    public required int OutputTokens { get; init; }

    /// <summary>When the request was sent, from the start of the level.</summary>
    public required double SentMs { get; init; }

    /// <summary>When each output token was available, from the request being sent.</summary>
    public required double[] TokenMs { get; init; }
}
