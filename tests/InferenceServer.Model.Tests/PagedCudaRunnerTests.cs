using InferenceServer.ModelBuilder;
using InferenceServer.Tests;

namespace InferenceServer.Model.Tests;

/// <summary>A test that needs a CUDA device; elsewhere it is skipped and says why.</summary>
public sealed class CudaFactAttribute : FactAttribute
{
    public CudaFactAttribute()
    {
        if (CudaRuntime.Unavailable() is { } reason)
            Skip = $"needs a CUDA device: {reason}";
    }
}

/// <summary>A test of how the CUDA runner fails where CUDA is missing; skipped where it is there.</summary>
public sealed class NoCudaFactAttribute : FactAttribute
{
    public NoCudaFactAttribute()
    {
        if (CudaRuntime.Unavailable() is null)
            Skip = "this machine has CUDA; the CUDA tests cover the runner here";
    }
}

/// <summary>
/// The small model as a dense float32 folder (the CPU reference), and as the float16 folders the
/// CUDA runners take: paged, and dense.
/// </summary>
public sealed class PagedModelPair : IDisposable
{
    private readonly TempFolder _temp = new();

    public ModelFolder Dense { get; }
    public ModelFolder Paged { get; }
    public ModelFolder DenseHalf { get; }

    public PagedModelPair()
    {
        // Same seed and spread as SmallModelFixture: the same weights, written twice.
        using (var weights = new ModelBuilder.Checkpoint.RandomWeights(seed: 7, standardDeviation: 0.1f))
            DecoderModelBuilder.Build(SmallModelFixture.Config, weights, _temp.Combine("dense"), new BuildOptions(), tokenizerFolder: null);
        using (var weights = new ModelBuilder.Checkpoint.RandomWeights(seed: 7, standardDeviation: 0.1f))
        {
            DecoderModelBuilder.Build(SmallModelFixture.Config, weights, _temp.Combine("paged"),
                new BuildOptions { Precision = Precision.Fp16, Variant = GraphVariant.Paged, SamplingTopK = 8 }, tokenizerFolder: null);
        }
        using (var weights = new ModelBuilder.Checkpoint.RandomWeights(seed: 7, standardDeviation: 0.1f))
            DecoderModelBuilder.Build(SmallModelFixture.Config, weights, _temp.Combine("dense16"), new BuildOptions { Precision = Precision.Fp16 }, tokenizerFolder: null);
        Dense = ModelFolder.Load(_temp.Combine("dense"));
        Paged = ModelFolder.Load(_temp.Combine("paged"));
        DenseHalf = ModelFolder.Load(_temp.Combine("dense16"));
    }

    public void Dispose() => _temp.Dispose();
}

/// <summary>
/// The paged CUDA runner against the dense CPU runner on the same weights (float32 on the CPU,
/// cast to float16 for the GPU). Logit tolerance: 0.05 absolute, for logits of magnitude up to
/// about 10 in this model (float16 keeps about three decimal digits, through two layers).
/// </summary>
public sealed class PagedCudaRunnerTests(PagedModelPair models) : IClassFixture<PagedModelPair>
{
    private const float LogitTolerance = 0.05f;
    private const int BlockTokens = 16;

    private static readonly int[] PromptA = [5, 17, 99, 3, 42, 42, 8, 120, 77, 61, 9, 200, 31, 4, 4, 150, 11, 250, 7, 66];
    private static readonly int[] PromptB = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 19, 29, 39, 49];

    private PagedCudaRunner CreateRunner() => new(models.Paged, new PagedRunnerOptions { BlockTokens = BlockTokens, KvBlocks = 64, MaxSequences = 8, MaxStepTokens = 256 });

    [Fact]
    public void The_runner_refuses_a_dense_folder_before_touching_CUDA()
    {
        var error = Assert.Throws<ModelLoadException>(() => new PagedCudaRunner(models.Dense, new PagedRunnerOptions()).Dispose());
        Assert.Contains("--graph paged", error.Message, StringComparison.Ordinal);
    }

    [NoCudaFact]
    public void Without_the_CUDA_provider_the_runner_says_what_is_missing()
    {
        var error = Assert.Throws<ModelLoadException>(() => new PagedCudaRunner(models.Paged, new PagedRunnerOptions { KvBlocks = 64 }).Dispose());
        Assert.Contains("CUDA execution provider is not available", error.Message, StringComparison.Ordinal);
        Assert.Contains("-p:OrtCuda=true", error.Message, StringComparison.Ordinal);
    }

    // Greedy decoding of one sequence on the paged runner, with its own consecutive blocks.
    private static (int[] Tokens, float[] FirstLogits) PagedGreedy(PagedCudaRunner runner, int[] prompt, int count, int firstBlock)
    {
        var width = runner.MaxBlocksPerSequence;
        var table = Enumerable.Range(firstBlock, width).Select(b => b % runner.KvBlocks).ToArray();
        var step = runner.Step([new SequenceStep(0, prompt.Length)], prompt, table, width, withLogits: true);
        var firstLogits = step.Logits.ToArray();
        var tokens = new List<int> { (int)step.NextTokens[0] };
        while (tokens.Count < count)
        {
            step = runner.Step([new SequenceStep(prompt.Length + tokens.Count - 1, 1)], [tokens[^1]], table, width);
            tokens.Add((int)step.NextTokens[0]);
        }
        return ([.. tokens], firstLogits);
    }

    private int[] DenseGreedy(int[] prompt, int count, out float[] firstLogits)
    {
        using var runner = new DecoderRunner(models.Dense, new RunnerOptions { MaxBatch = 1, MaxSequenceLength = 64, IntraOpThreads = 1 });
        firstLogits = runner.Step(0, [new SequenceStep(0, prompt.Length)], prompt).ToArray();
        return Greedy.Generate(runner, prompt, count, []);
    }

    [CudaFact]
    public void Greedy_tokens_and_logits_agree_with_the_dense_CPU_path()
    {
        using var runner = CreateRunner();
        var (tokens, logits) = PagedGreedy(runner, PromptA, 24, firstBlock: 0);
        var expected = DenseGreedy(PromptA, 24, out var expectedLogits);
        Assert.Equal(expected, tokens);
        Assert.Equal(expectedLogits.Length, logits.Length);
        for (var i = 0; i < logits.Length; i++)
            Assert.True(MathF.Abs(logits[i] - expectedLogits[i]) <= LogitTolerance, $"logit {i}: {logits[i]} on CUDA, {expectedLogits[i]} on the CPU");
    }

    [CudaFact]
    public void Top_k_and_logsumexp_match_the_whole_logits_row()
    {
        using var runner = CreateRunner();
        var table = Enumerable.Range(0, runner.MaxBlocksPerSequence).ToArray();
        var step = runner.Step([new SequenceStep(0, PromptA.Length)], PromptA, table, table.Length, withLogits: true);
        var logits = step.Logits.ToArray();
        var order = Enumerable.Range(0, logits.Length).OrderByDescending(i => logits[i]).Take(step.TopK).ToArray();
        Assert.Equal(order.Select(i => (long)i), step.TopIds.ToArray());
        Assert.Equal(order.Select(i => logits[i]), step.TopLogits.ToArray());
        var max = logits.Max();
        var logSumExp = max + MathF.Log(logits.Sum(l => MathF.Exp(l - max)));
        Assert.Equal(logSumExp, step.LogSumExp[0], 1e-3f);
        Assert.Equal(order[0], step.NextTokens[0]);
    }

    [CudaFact]
    public void A_sequence_decodes_the_same_alone_and_batched_with_others()
    {
        using var runner = CreateRunner();
        var aloneA = PagedGreedy(runner, PromptA, 12, firstBlock: 0).Tokens;
        var aloneB = PagedGreedy(runner, PromptB, 12, firstBlock: 8).Tokens;

        // Both in every step: one prefill of both prompts packed, then decodes of both.
        var width = runner.MaxBlocksPerSequence;
        var table = Enumerable.Range(16, width).Concat(Enumerable.Range(32, width)).ToArray();
        var step = runner.Step([new SequenceStep(0, PromptA.Length), new SequenceStep(0, PromptB.Length)], [.. PromptA, .. PromptB], table, width);
        List<int> a = [(int)step.NextTokens[0]], b = [(int)step.NextTokens[1]];
        while (a.Count < 12)
        {
            step = runner.Step([new SequenceStep(PromptA.Length + a.Count - 1, 1), new SequenceStep(PromptB.Length + b.Count - 1, 1)], [a[^1], b[^1]], table, width);
            a.Add((int)step.NextTokens[0]);
            b.Add((int)step.NextTokens[1]);
        }
        Assert.Equal(aloneA, a);
        Assert.Equal(aloneB, b);
    }

    [CudaFact]
    public void A_prefix_in_shared_blocks_gives_the_same_output_as_recomputing_it()
    {
        using var runner = CreateRunner();
        // 40 tokens: two full blocks of 16 and 8 more.
        var prompt = Enumerable.Range(0, 40).Select(i => (i * 37 + 11) % 256).ToArray();
        var recomputed = PagedGreedy(runner, prompt, 10, firstBlock: 0).Tokens;

        // A second sequence whose table starts with the first run's two full blocks: only the
        // last 8 prompt tokens are computed, on top of a past of 32 it did not write.
        var width = runner.MaxBlocksPerSequence;
        var table = new[] { 0, 1 }.Concat(Enumerable.Range(40, width - 2)).ToArray();
        var step = runner.Step([new SequenceStep(32, 8)], prompt[32..], table, width);
        List<int> shared = [(int)step.NextTokens[0]];
        while (shared.Count < 10)
        {
            step = runner.Step([new SequenceStep(prompt.Length + shared.Count - 1, 1)], [shared[^1]], table, width);
            shared.Add((int)step.NextTokens[0]);
        }
        Assert.Equal(recomputed, shared);
    }

    [CudaFact]
    public void A_step_that_does_not_fit_is_refused_and_the_runner_still_works()
    {
        using var runner = CreateRunner();
        var width = runner.MaxBlocksPerSequence;
        var table = Enumerable.Range(0, width).ToArray();
        Assert.Throws<ArgumentOutOfRangeException>(() => runner.Step([new SequenceStep(0, 3)], [1, 2, 3], [.. table[..^1], 999], width));
        Assert.Throws<ArgumentException>(() => runner.Step([new SequenceStep(0, 3)], [1, 2], table, width));
        var (tokens, _) = PagedGreedy(runner, PromptB, 4, firstBlock: 0);
        Assert.Equal(DenseGreedy(PromptB, 4, out _), tokens);
    }
}
