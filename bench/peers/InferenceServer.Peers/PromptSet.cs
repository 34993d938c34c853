using System.Text.Json;
using System.Text.Json.Serialization;
using InferenceServer.LoadGenerator.Scenarios;

namespace InferenceServer.Peers;

/// <summary>
/// The requests of a run, as token ids: for each level, each stream's prompts in the order it sends
/// them. They are the load generator's concurrency-workload prompts (same seed, source text,
/// tokenizer and request keys), encoded as our server encodes a text prompt, so llama.cpp and ONNX
/// Runtime GenAI get the tokens our engine gets.
/// </summary>
internal sealed record PromptSet
{
    public required int PromptTokens { get; init; }
    public required int OutputTokens { get; init; }
    public required int Seed { get; init; }
    public required string Source { get; init; }
    public required int[] Warmup { get; init; }
    public required List<PromptLevel> Levels { get; init; }

    public static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.CamelCase, WriteIndented = false };

    /// <summary>
    /// Each level sends <paramref name="requestsPerLevel"/> requests in all, spread over its streams as
    /// the load generator's closed loop spreads them when every request takes as long.
    /// </summary>
    public static PromptSet Create(Tokenizer.Tokenizer tokenizer, SourceManifest manifest, int promptTokens, int outputTokens, IReadOnlyList<int> levels,
        int requestsPerLevel, int seed)
    {
        var source = new PromptSource(new SourceLibrary(manifest), tokenizer, promptTokens, seed);
        int[] Encode(long key) => tokenizer.Encode(source.Prompt(key), addSpecialTokens: true);
        var result = new List<PromptLevel>();
        foreach (var streams in levels)
        {
            var perStream = new int[streams][][];
            for (var stream = 0; stream < streams; stream++)
            {
                var count = requestsPerLevel / streams + (stream < requestsPerLevel % streams ? 1 : 0);
                perStream[stream] = [.. Enumerable.Range(0, count).Select(k => Encode(ConcurrencyKey(streams, stream, k)))];
            }
            result.Add(new PromptLevel { Streams = perStream });
        }
        return new PromptSet
        {
            PromptTokens = promptTokens,
            OutputTokens = outputTokens,
            Seed = seed,
            Source = manifest.Description ?? "",
            Warmup = Encode(-1)[..Math.Min(16, promptTokens)],
            Levels = result,
        };
    }

    // The load generator's request key for (level, stream, k): ConcurrencyWorkload.Key.
    private static long ConcurrencyKey(int level, int stream, int k) => ((long)level << 48) | ((long)stream << 32) | (uint)k;

    public static PromptSet Load(string path) =>
        JsonSerializer.Deserialize<PromptSet>(File.ReadAllText(path), Json) ?? throw new UsageException($"{path}: empty prompt set");
}

internal sealed record PromptLevel
{
    /// <summary>[stream][request] -> token ids.</summary>
    [JsonPropertyName("streams")]
    public required int[][][] Streams { get; init; }
}
