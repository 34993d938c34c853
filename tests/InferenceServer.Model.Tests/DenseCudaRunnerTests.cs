using InferenceServer.Tests;

namespace InferenceServer.Model.Tests;

/// <summary>
/// The dense runner on the CUDA provider (float16 graph, KV slots on the device) against the
/// same runner on the CPU (float32 graph, same weights). Tolerance as for the paged runner.
/// </summary>
public sealed class DenseCudaRunnerTests(PagedModelPair models) : IClassFixture<PagedModelPair>
{
    private const float LogitTolerance = 0.05f;

    private static readonly int[] PromptA = [5, 17, 99, 3, 42, 42, 8, 120, 77, 61, 9, 200, 31, 4, 4, 150, 11, 250, 7, 66];
    private static readonly int[] PromptB = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 19, 29, 39, 49];

    private DecoderRunner Cuda(int slots = 4) =>
        new(models.DenseHalf, new RunnerOptions { MaxBatch = slots, MaxSequenceLength = 64, Device = RunnerDevice.Cuda });

    private DecoderRunner Cpu() => new(models.Dense, new RunnerOptions { MaxBatch = 1, MaxSequenceLength = 64, IntraOpThreads = 1 });

    [NoCudaFact]
    public void Without_the_CUDA_provider_the_runner_says_what_is_missing()
    {
        var error = Assert.Throws<ModelLoadException>(() => Cuda().Dispose());
        Assert.Contains("CUDA execution provider is not available", error.Message, StringComparison.Ordinal);
        Assert.Contains("-p:OrtCuda=true", error.Message, StringComparison.Ordinal);
    }

    [CudaFact]
    public void Greedy_tokens_and_logits_agree_with_the_CPU_path()
    {
        using var cpu = Cpu();
        var expectedLogits = cpu.Step(0, [new SequenceStep(0, PromptA.Length)], PromptA).ToArray();
        var expected = Greedy.Generate(cpu, PromptA, 24, []);

        using var cuda = Cuda();
        var logits = cuda.Step(0, [new SequenceStep(0, PromptA.Length)], PromptA).ToArray();
        for (var i = 0; i < logits.Length; i++)
            Assert.True(MathF.Abs(logits[i] - expectedLogits[i]) <= LogitTolerance, $"logit {i}: {logits[i]} on CUDA, {expectedLogits[i]} on the CPU");
        Assert.Equal(expected, Greedy.Generate(cuda, PromptA, 24, []));
    }

    [CudaFact]
    public void Rows_of_different_lengths_decode_in_one_step_as_they_do_alone()
    {
        using var cuda = Cuda();
        var aloneA = Greedy.Generate(cuda, PromptA, 10, []);
        var aloneB = Greedy.Generate(cuda, PromptB, 10, []);

        // Slots 2 and 3: each prompt prefilled alone, then both decoded together.
        List<int> a = [Greedy.ArgMax(cuda.Step(2, [new SequenceStep(0, PromptA.Length)], PromptA))];
        List<int> b = [Greedy.ArgMax(cuda.Step(3, [new SequenceStep(0, PromptB.Length)], PromptB))];
        while (a.Count < 10)
        {
            var logits = cuda.Step(2, [new SequenceStep(PromptA.Length + a.Count - 1, 1), new SequenceStep(PromptB.Length + b.Count - 1, 1)], [a[^1], b[^1]]);
            a.Add(Greedy.ArgMax(logits[..cuda.VocabSize]));
            b.Add(Greedy.ArgMax(logits[cuda.VocabSize..]));
        }
        Assert.Equal(aloneA, a);
        Assert.Equal(aloneB, b);
    }

    [CudaFact]
    public void A_prefix_copied_between_slots_on_the_device_gives_the_same_output_as_recomputing_it()
    {
        using var cuda = Cuda();
        var recomputed = Greedy.Generate(cuda, PromptA, 8, []);
        cuda.Step(1, [new SequenceStep(0, 12)], PromptA[..12]);
        cuda.CopyPrefix(fromSlot: 1, toSlot: 2, length: 12);
        List<int> continued = [Greedy.ArgMax(cuda.Step(2, [new SequenceStep(12, PromptA.Length - 12)], PromptA[12..]))];
        while (continued.Count < 8)
            continued.Add(Greedy.ArgMax(cuda.Step(2, [new SequenceStep(PromptA.Length + continued.Count - 1, 1)], [continued[^1]])));
        Assert.Equal(recomputed, continued);
    }
}
