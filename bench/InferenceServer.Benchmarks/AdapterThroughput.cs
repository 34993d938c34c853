using System.Diagnostics;
using System.Globalization;
using InferenceServer.ModelBuilder;

namespace InferenceServer.Benchmarks;

/// <summary>
/// The cases of <see cref="AdapterDecodeStepBenchmark"/> timed in turns rather than one after
/// another, so that a machine shared with other work slows every case alike: each round times a
/// block of decode steps of every case, starting with a different case each round. Prints a
/// Markdown table per weight precision: median, 25th and 75th percentile of the per-round step
/// time, the tokens/s that means (8 rows per step) and the ratio to the plain graph.
/// Run: dotnet run -c Release --project bench/InferenceServer.Benchmarks -- adapters [ROUNDS [THREADS]]
/// (THREADS: ONNX Runtime's threads per operator; by default one per core).
/// </summary>
public static class AdapterThroughput
{
    private const int StepsPerBlock = 10;

    public static void Run(int rounds, int threads)
    {
        var threadText = threads > 0 ? $"{threads} ONNX Runtime threads" : "ONNX Runtime's default threads";
        Console.WriteLine($"# Decode steps with LoRA adapters: 20M model, 8 rows, past 128, {rounds} rounds of {StepsPerBlock} steps per case, {Environment.ProcessorCount} cores, {threadText}");
        foreach (var precision in new[] { Precision.Fp32, Precision.Int4 })
        {
            var cases = Enum.GetValues<AdapterDecodeStepBenchmark.AdapterMix>()
                .Select(mix => new AdapterDecodeStepBenchmark { Mix = mix, Weights = precision, IntraOpThreads = threads })
                .ToArray();
            foreach (var c in cases)
            {
                c.Setup();
                for (var i = 0; i < StepsPerBlock; i++)
                    c.DecodeStep();
            }
            var times = cases.Select(_ => new List<double>()).ToArray();
            for (var round = 0; round < rounds; round++)
            {
                for (var k = 0; k < cases.Length; k++)
                {
                    var index = (round + k) % cases.Length;
                    var started = Stopwatch.GetTimestamp();
                    for (var i = 0; i < StepsPerBlock; i++)
                        cases[index].DecodeStep();
                    times[index].Add(Stopwatch.GetElapsedTime(started).TotalMilliseconds / StepsPerBlock);
                }
            }
            foreach (var c in cases)
                c.Cleanup();

            Console.WriteLine();
            Console.WriteLine($"## {precision} weights");
            Console.WriteLine();
            Console.WriteLine("| case | median ms/step | p25 | p75 | tokens/s | vs plain graph |");
            Console.WriteLine("|---|---:|---:|---:|---:|---:|");
            var plain = Percentile(times[0], 0.5);
            for (var k = 0; k < cases.Length; k++)
            {
                var median = Percentile(times[k], 0.5);
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"| {cases[k].Mix} | {median:F2} | {Percentile(times[k], 0.25):F2} | {Percentile(times[k], 0.75):F2} | {8 / median * 1000:F0} | {median / plain:F2}x |"));
            }
        }
    }

    private static double Percentile(List<double> values, double fraction)
    {
        var sorted = values.Order().ToArray();
        return sorted[(int)Math.Round(fraction * (sorted.Length - 1))];
    }
}
