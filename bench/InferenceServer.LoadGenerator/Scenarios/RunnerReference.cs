using System.Diagnostics;
using System.Globalization;
using InferenceServer.LoadGenerator.Measurement;
using InferenceServer.LoadGenerator.Reports;
using InferenceServer.Model;
using InferenceServer.Tests;

namespace InferenceServer.LoadGenerator.Scenarios;

/// <summary>
/// The bare model runner, the floor every serving figure is compared with: for each batch size,
/// prefill that many prompts in one step, then decode one token in every row per step (greedy),
/// timing each step; rounds repeat until the level's time is used up. No engine, no tokenizer,
/// no network: what is left is ONNX Runtime and the KV buffers.
/// </summary>
public static class RunnerReference
{
    public static RunnerReport Run(string modelPath, IReadOnlyList<int> batches, int promptTokens, int outputTokens, TimeSpan durationPerLevel,
        int threads, int seed, IProgressDisplay progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(batches);
        ArgumentNullException.ThrowIfNull(progress);
        var folder = ModelFolder.Load(modelPath);
        var maxBatch = batches.Max();
        var capacity = Math.Min(folder.Config.Model.ContextLength, promptTokens + outputTokens + 1);
        promptTokens = Math.Min(promptTokens, capacity - 2);
        var decodeSteps = Math.Max(1, Math.Min(outputTokens, capacity - promptTokens - 1));
        using var runner = new DecoderRunner(folder, new RunnerOptions { MaxBatch = maxBatch, MaxSequenceLength = capacity, IntraOpThreads = threads });
        var report = new RunnerReport { ModelPath = folder.Path, PromptTokens = promptTokens };
        var random = new Random(Seeds.Derive(seed, 0x52554E4E));
        var vocabulary = runner.VocabSize;

        // One untimed round at batch 1: ORT's first run of each shape is much slower than the rest.
        Round(runner, 1, Prompts(random, 1, promptTokens, vocabulary), promptTokens, Math.Min(4, decodeSteps), null, null);
        foreach (var batch in batches)
        {
            var line = progress.Start(string.Create(CultureInfo.InvariantCulture, $"runner: batch {batch}"));
            var prefill = new List<double>();
            var steps = new List<double>(decodeSteps * 8);
            var started = Stopwatch.GetTimestamp();
            do
            {
                cancellationToken.ThrowIfCancellationRequested();
                Round(runner, batch, Prompts(random, batch, promptTokens, vocabulary), promptTokens, decodeSteps, prefill, steps);
                line.Report(Stopwatch.GetElapsedTime(started) / durationPerLevel);
            }
            while (Stopwatch.GetElapsedTime(started) < durationPerLevel);
            var stepMs = Percentiles.Summarize(steps);
            var level = new RunnerLevel
            {
                Batch = batch,
                Steps = steps.Count,
                PrefillMs = Percentiles.Summarize(prefill),
                StepMs = stepMs,
                TokensPerSecond = stepMs is { Mean: > 0 } ? batch * 1000.0 / stepMs.Mean : 0,
            };
            report.Levels.Add(level);
            line.Complete(string.Create(CultureInfo.InvariantCulture, $"step p50 {stepMs?.P50:F2} ms, {level.TokensPerSecond:F1} tok/s"));
        }
        return report;
    }

    private static int[] Prompts(Random random, int rows, int length, int vocabulary)
    {
        var tokens = new int[rows * length];
        for (var i = 0; i < tokens.Length; i++)
            tokens[i] = random.Next(3, vocabulary);
        return tokens;
    }

    /// <summary>One prefill of <paramref name="batch"/> fresh prompts, then decode steps, each fed the previous step's most likely token per row.</summary>
    private static void Round(DecoderRunner runner, int batch, int[] prompts, int promptTokens, int decodeSteps, List<double>? prefill, List<double>? steps)
    {
        var rows = new SequenceStep[batch];
        Array.Fill(rows, new SequenceStep(0, promptTokens));
        var next = new int[batch];
        var started = Stopwatch.GetTimestamp();
        var logits = runner.Step(0, rows, prompts);
        prefill?.Add(Stopwatch.GetElapsedTime(started).TotalMilliseconds);
        for (var step = 0; step < decodeSteps; step++)
        {
            for (var row = 0; row < batch; row++)
            {
                next[row] = Greedy.ArgMax(logits.Slice(row * runner.VocabSize, runner.VocabSize));
                rows[row] = new SequenceStep(promptTokens + step, 1);
            }
            started = Stopwatch.GetTimestamp();
            logits = runner.Step(0, rows, next);
            steps?.Add(Stopwatch.GetElapsedTime(started).TotalMilliseconds);
        }
    }
}
