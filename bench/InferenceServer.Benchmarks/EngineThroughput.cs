using System.Diagnostics;
using System.Globalization;
using InferenceServer.Engine;
using InferenceServer.Model;

namespace InferenceServer.Benchmarks;

/// <summary>
/// The engine with the real ~20M-parameter model on this machine's CPU (not a BenchmarkDotNet
/// benchmark: whole requests through the loop). Prints a Markdown report:
///  - aggregate generated tokens/s with 1, 4, 8 and 16 concurrent streams (64-token prompts, 128 tokens each);
///  - time to first token of a 2,000-token prompt, cold and then with a 1,950-token prefix in common with a previous one.
/// Run: dotnet run -c Release --project bench/InferenceServer.Benchmarks -- engine
/// </summary>
public static class EngineThroughput
{
    public static async Task RunAsync()
    {
        var folder = BenchModels.Get(BenchModels.Small20M, "llama-20m");
        var tokenizer = BenchModels.SyntheticTokenizer(folder.Config.Model.VocabSize);
        Console.WriteLine($"# Engine throughput: {folder.Path}, {Environment.ProcessorCount} cores, .NET {Environment.Version}");
        Console.WriteLine();

        using (var runner = new DecoderRunner(folder, new RunnerOptions { MaxBatch = 16, MaxSequenceLength = 256 }))
        {
            await using var engine = new InferenceEngine(runner, tokenizer, new EngineOptions());
            await StreamsAsync(engine, 2, 32); // warm-up
            Console.WriteLine("| streams | generated tokens | seconds | tokens/s | vs 1 stream |");
            Console.WriteLine("|---:|---:|---:|---:|---:|");
            double single = 0;
            foreach (var streams in new[] { 1, 4, 8, 16 })
            {
                var (tokens, seconds) = await StreamsAsync(engine, streams, 128);
                var rate = tokens / seconds;
                if (streams == 1)
                    single = rate;
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {streams} | {tokens} | {seconds:F2} | {rate:F1} | {rate / single:F2}x |"));
            }
        }

        Console.WriteLine();
        using (var runner = new DecoderRunner(folder, new RunnerOptions { MaxBatch = 2, MaxSequenceLength = 2048 }))
        {
            await using var engine = new InferenceEngine(runner, tokenizer, new EngineOptions());
            var shared = Prompt(1950, seed: 1);
            int[] first = [.. shared, .. Prompt(50, seed: 2)];
            int[] second = [.. shared, .. Prompt(50, seed: 3)];
            await engine.Submit(Request(Prompt(300, seed: 4), 2)).CollectAsync(); // warm-up
            var cold = await engine.Submit(Request(first, 4)).CollectAsync();
            var warm = await engine.Submit(Request(second, 4)).CollectAsync();
            Console.WriteLine("| 2,000-token prompt | time to first token | cached prompt tokens |");
            Console.WriteLine("|---|---:|---:|");
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| cold | {cold.Usage.TimeToFirstToken.TotalMilliseconds:F1} ms | {cold.Usage.CachedPromptTokens} |"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| 1,950-token prefix shared | {warm.Usage.TimeToFirstToken.TotalMilliseconds:F1} ms | {warm.Usage.CachedPromptTokens} |"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| ratio | {warm.Usage.TimeToFirstToken / cold.Usage.TimeToFirstToken * 100:F1}% | |"));
        }
    }

    private static async Task<(int Tokens, double Seconds)> StreamsAsync(InferenceEngine engine, int streams, int maxTokens)
    {
        var started = Stopwatch.GetTimestamp();
        var results = await Task.WhenAll(Enumerable.Range(0, streams).Select(i => engine.Submit(Request(Prompt(64, seed: 100 + i), maxTokens)).CollectAsync()));
        var seconds = Stopwatch.GetElapsedTime(started).TotalSeconds;
        return (results.Sum(r => r.Usage.CompletionTokens), seconds);
    }

    private static GenerationRequest Request(int[] prompt, int maxTokens) => new() { PromptTokens = prompt, MaxTokens = maxTokens, IgnoreEos = true };

    private static int[] Prompt(int length, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, length).Select(_ => random.Next(3, 8000)).ToArray();
    }
}
