using System.Diagnostics;
using System.Globalization;
using InferenceServer.LoadGenerator.Measurement;
using InferenceServer.Model;
using Microsoft.ML.OnnxRuntimeGenAI;
using GenAiModel = Microsoft.ML.OnnxRuntimeGenAI.Model;

namespace InferenceServer.Peers;

/// <summary>
/// One decode step of ONNX Runtime GenAI against one of our bare runner (<see cref="DecoderRunner"/>)
/// on the same model folder, in one process: both load the same ONNX Runtime library (GenAI 0.18
/// is built against the 1.31.0 our runner uses), so the only differences left are how each
/// configures its session and feeds a step. Timings of separate processes a minute apart differ by
/// more than the two engines do on a shared machine; here each round prefills one random prompt in
/// both, then decodes all its steps in one engine and then in the other (the order swapped every
/// round), so both see the same background load. The steps of one engine are not interleaved with
/// the other's, as each session's idle intra-op threads spin for a while after a run and would
/// slow the other's next step.
/// </summary>
internal static class StepPair
{
    public static void Run(string modelFolder, int threads, int contextLength, int promptTokens, int steps, int rounds)
    {
        if (promptTokens < 1 || steps < 1 || rounds < 1)
            throw new UsageException("--prompt-tokens, --steps and --rounds must be positive");
        if (promptTokens + steps + 1 > contextLength)
            throw new UsageException($"a prompt of {promptTokens} tokens and {steps} steps do not fit a context of {contextLength}");

        using var handle = new OgaHandle();
        // The same session settings as the peer run.
        using var model = GenAiRunner.LoadModel(modelFolder, threads);
        var folder = ModelFolder.Load(modelFolder);
        using var runner = new DecoderRunner(folder, new RunnerOptions { MaxBatch = 1, MaxSequenceLength = contextLength, IntraOpThreads = threads });

        var random = new Random(1);
        var genaiSteps = new List<double>(rounds * steps);
        var runnerSteps = new List<double>(rounds * steps);
        var roundDifferences = new List<double>(rounds);
        // Round 0 warms both sessions up and is not kept.
        for (var round = 0; round <= rounds; round++)
        {
            var prompt = new int[promptTokens];
            for (var i = 0; i < prompt.Length; i++)
                prompt[i] = random.Next(3, runner.VocabSize);
            var genai = new List<double>(steps);
            var ours = new List<double>(steps);
            if (round % 2 == 0)
            {
                GenAiSteps(model, prompt, steps, contextLength, genai);
                RunnerSteps(runner, prompt, steps, ours);
            }
            else
            {
                RunnerSteps(runner, prompt, steps, ours);
                GenAiSteps(model, prompt, steps, contextLength, genai);
            }
            if (round == 0)
                continue;
            genaiSteps.AddRange(genai);
            runnerSteps.AddRange(ours);
            roundDifferences.Add(Percentiles.Summarize(ours)!.P50 - Percentiles.Summarize(genai)!.P50);
        }

        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{rounds} rounds of a {promptTokens}-token prompt and {steps} decode steps, {threads} threads, context {contextLength}"));
        Print("ONNX Runtime GenAI step", genaiSteps);
        Print("our runner step", runnerSteps);
        roundDifferences.Sort();
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"ours - GenAI, p50 of each round: min {roundDifferences[0]:F2} / median {roundDifferences[roundDifferences.Count / 2]:F2} / max {roundDifferences[^1]:F2} ms"));
    }

    // GenerateNextToken runs one step of the session and GenAI's greedy search over its logits.
    private static void GenAiSteps(GenAiModel model, int[] prompt, int steps, int contextLength, List<double> times)
    {
        using var parameters = new GeneratorParams(model);
        parameters.SetSearchOption("max_length", contextLength);
        parameters.SetSearchOption("min_length", prompt.Length + steps + 1);
        parameters.SetSearchOption("do_sample", false);
        using var generator = new Generator(model, parameters);
        generator.AppendTokens(prompt);
        for (var step = 0; step < steps; step++)
        {
            var started = Stopwatch.GetTimestamp();
            generator.GenerateNextToken();
            times.Add(Stopwatch.GetElapsedTime(started).TotalMilliseconds);
        }
    }

    // As the load generator's runner target times a step: Step alone, the greedy pick outside.
    private static void RunnerSteps(DecoderRunner runner, int[] prompt, int steps, List<double> times)
    {
        var logits = runner.Step(0, [new SequenceStep(0, prompt.Length)], prompt);
        var next = new int[1];
        for (var step = 0; step < steps; step++)
        {
            next[0] = System.Numerics.Tensors.TensorPrimitives.IndexOfMax(logits);
            var started = Stopwatch.GetTimestamp();
            logits = runner.Step(0, [new SequenceStep(prompt.Length + step, 1)], next);
            times.Add(Stopwatch.GetElapsedTime(started).TotalMilliseconds);
        }
    }

    private static void Print(string name, List<double> times)
    {
        var summary = Percentiles.Summarize(times)!;
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{name}: {times.Count} steps, p50 / p90 / p99 {summary.P50:F2} / {summary.P90:F2} / {summary.P99:F2} ms, mean {summary.Mean:F2} ms"));
    }
}
