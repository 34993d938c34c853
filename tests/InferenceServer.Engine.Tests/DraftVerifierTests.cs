using InferenceServer.Engine.Sampling;
using InferenceServer.Engine.Speculation;

namespace InferenceServer.Engine.Tests;

/// <summary>
/// <see cref="DraftVerifier"/> over a toy model whose logits depend on the previous token only
/// (a bigram table), so that the logits a verification step would compute for the last token and
/// the drafts are known exactly, and plain decoding can be run beside it.
/// </summary>
public sealed class DraftVerifierTests
{
    private const int Vocab = 6;

    /// <summary>logits[previous * Vocab + next], seeded; some rows nearly flat, some peaked.</summary>
    private static float[] BigramTable(int seed)
    {
        var random = new Random(seed);
        var table = new float[Vocab * Vocab];
        for (var row = 0; row < Vocab; row++)
        {
            var spread = 0.5 + 2.5 * random.NextDouble();
            for (var next = 0; next < Vocab; next++)
                table[row * Vocab + next] = (float)(spread * (random.NextDouble() * 2 - 1));
        }
        return table;
    }

    private static ReadOnlySpan<float> Row(float[] table, int previous) => table.AsSpan(previous * Vocab, Vocab);

    /// <summary>The logits a verification step computes: after the last token, then after each draft.</summary>
    private static float[] VerificationLogits(float[] table, int last, ReadOnlySpan<int> draft)
    {
        var logits = new float[(draft.Length + 1) * Vocab];
        Row(table, last).CopyTo(logits);
        for (var i = 0; i < draft.Length; i++)
            Row(table, draft[i]).CopyTo(logits.AsSpan((i + 1) * Vocab));
        return logits;
    }

    private static List<int> Plain(float[] table, int[] prompt, int count, SamplingParameters parameters)
    {
        using var sampler = new Sampler(parameters, Vocab, prompt);
        var workspace = new SamplingWorkspace(Vocab);
        var tokens = new List<int>(prompt);
        while (tokens.Count < prompt.Length + count)
        {
            var token = sampler.Sample(Row(table, tokens[^1]), workspace).Id;
            sampler.Accept(token);
            tokens.Add(token);
        }
        return tokens.GetRange(prompt.Length, count);
    }

    /// <summary>Prompt-lookup drafts checked by the verifier until <paramref name="count"/> tokens; also counts the accepted drafts.</summary>
    private static List<int> Speculative(float[] table, int[] prompt, int count, SamplingParameters parameters, int maxDrafts, out int accepted)
    {
        using var sampler = new Sampler(parameters, Vocab, prompt);
        using var drafter = new PromptLookupDrafter();
        var workspace = new SamplingWorkspace(Vocab);
        var tokens = new List<int>(prompt);
        var draft = new int[maxDrafts];
        var chosen = new int[maxDrafts + 1];
        accepted = 0;
        while (tokens.Count < prompt.Length + count)
        {
            var drafted = drafter.Propose(tokens.ToArray(), draft.AsSpan(0, Math.Min(maxDrafts, prompt.Length + count - tokens.Count - 1)));
            var logits = VerificationLogits(table, tokens[^1], draft.AsSpan(0, drafted));
            var written = DraftVerifier.Verify(sampler, workspace, logits, draft.AsSpan(0, drafted), chosen);
            accepted += written - 1;
            tokens.AddRange(chosen[..written]);
        }
        return tokens.GetRange(prompt.Length, count);
    }

    // A prompt that repeats itself, so that drafts are proposed all along.
    private static readonly int[] Prompt = [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 1, 0, 5, 4, 0, 1, 2];

    [Fact]
    public void Greedy_speculation_gives_the_tokens_of_greedy_decoding_and_accepts_drafts()
    {
        foreach (var seed in new[] { 1, 2, 3, 4, 5 })
        {
            var table = BigramTable(seed);
            var plain = Plain(table, Prompt, 60, SamplingParameters.Greedy);
            foreach (var maxDrafts in new[] { 1, 2, 4, 8 })
            {
                var speculative = Speculative(table, Prompt, 60, SamplingParameters.Greedy, maxDrafts, out var accepted);
                Assert.Equal(plain, speculative);
                // A greedy bigram model falls into a cycle that the drafter learns.
                Assert.True(accepted > 20, $"seed {seed}, {maxDrafts} drafts: {accepted} accepted");
            }
        }
    }

    [Fact]
    public void Greedy_verification_accepts_the_drafts_that_equal_the_arg_max_and_adds_the_models_token()
    {
        var table = BigramTable(7);
        int Best(int previous) => System.Numerics.Tensors.TensorPrimitives.IndexOfMax(Row(table, previous));
        var last = 3;
        int[] right = [Best(last), Best(Best(last)), Best(Best(Best(last)))];
        var chosen = new int[4];

        // All right: three drafts and the token after them.
        Assert.Equal(4, DraftVerifier.VerifyGreedy(VerificationLogits(table, last, right), Vocab, right, chosen));
        Assert.Equal([.. right, Best(right[2])], chosen);

        // The second is wrong: the first draft, then the model's correction.
        int[] wrong = [right[0], (right[1] + 1) % Vocab, right[2]];
        Assert.Equal(2, DraftVerifier.VerifyGreedy(VerificationLogits(table, last, wrong), Vocab, wrong, chosen));
        Assert.Equal([right[0], right[1]], chosen[..2]);

        // No drafts: one ordinary step.
        Assert.Equal(1, DraftVerifier.VerifyGreedy(Row(table, last), Vocab, [], chosen));
        Assert.Equal(Best(last), chosen[0]);

        // The sampler's greedy choice agrees, ties going to the lowest id.
        float[] tied = [1, 3, 3, 0, 0, 0, /* after 2 */ 0, 0, 0, 0, 0, 9];
        using var sampler = new Sampler(SamplingParameters.Greedy, Vocab, []);
        Assert.Equal(1, DraftVerifier.Verify(sampler, new SamplingWorkspace(Vocab), tied, [2], chosen));
        Assert.Equal(1, chosen[0]);
        Assert.Equal(1, DraftVerifier.VerifyGreedy(tied, Vocab, [2], chosen));
        Assert.Equal(1, chosen[0]);
    }

    [Fact]
    public void Seeded_sampling_with_penalties_draws_the_very_tokens_of_plain_sampling()
    {
        // One draw per token in both, and every chosen token recorded before the next position:
        // the same seed gives the same tokens, penalties included.
        var parameters = new SamplingParameters
        {
            Temperature = 0.9, TopP = 0.95, RepetitionPenalty = 1.3, FrequencyPenalty = 0.4, PresencePenalty = 0.2, Seed = 42,
        };
        var table = BigramTable(8);
        var plain = Plain(table, Prompt, 200, parameters);
        var speculative = Speculative(table, Prompt, 200, parameters, 4, out var accepted);
        Assert.Equal(plain, speculative);
        Assert.True(accepted > 0);
    }

    public static TheoryData<double, int> Distributions => new() { { 1.0, 0 }, { 0.7, 3 } };

    [Theory]
    [MemberData(nameof(Distributions))]
    public void Sampled_tokens_follow_the_distribution_of_plain_sampling(double temperature, int topK)
    {
        // 20,000 sequences of three tokens, each with its own seed: the pairs (first, second) and
        // the third token must follow the exact distribution of the bigram chain under these
        // settings. Chi-square bounds at p = 1e-4; the seeds are fixed, so the outcome is too.
        const int Runs = 20_000;
        var table = BigramTable(9);
        double[] Probabilities(int previous)
        {
            var row = Row(table, previous).ToArray().Select(l => l / temperature).ToArray();
            var kept = topK > 0 ? row.OrderDescending().ElementAt(topK - 1) : double.NegativeInfinity;
            var weights = row.Select(l => l >= kept ? Math.Exp(l - row.Max()) : 0).ToArray();
            return weights.Select(w => w / weights.Sum()).ToArray();
        }

        var pairs = new int[Vocab * Vocab];
        var thirds = new int[Vocab];
        var accepted = 0;
        for (var run = 0; run < Runs; run++)
        {
            var parameters = new SamplingParameters { Temperature = temperature, TopK = topK, Seed = (ulong)(1000 + run) };
            var tokens = Speculative(table, Prompt, 3, parameters, 2, out var runAccepted);
            accepted += runAccepted;
            pairs[tokens[0] * Vocab + tokens[1]]++;
            thirds[tokens[2]]++;
        }
        Assert.True(accepted > Runs / 4, $"only {accepted} drafts accepted in {Runs} runs"); // the drafts do take part

        var first = Probabilities(Prompt[^1]);
        var expectedPairs = new double[Vocab * Vocab];
        var expectedThirds = new double[Vocab];
        for (var a = 0; a < Vocab; a++)
        {
            var second = Probabilities(a);
            for (var b = 0; b < Vocab; b++)
            {
                expectedPairs[a * Vocab + b] = first[a] * second[b];
                var third = Probabilities(b);
                for (var c = 0; c < Vocab; c++)
                    expectedThirds[c] += first[a] * second[b] * third[c];
            }
        }
        AssertFits(pairs, expectedPairs, Runs, criticalValue: ChiSquareCritical(pairs.Length, expectedPairs));
        AssertFits(thirds, expectedThirds, Runs, criticalValue: ChiSquareCritical(thirds.Length, expectedThirds));
    }

    // Chi-square's 1e-4 upper quantile for the cells that can occur (Wilson-Hilferty).
    private static double ChiSquareCritical(int cells, double[] expected)
    {
        var degrees = expected.Count(p => p > 0) - 1;
        const double z = 3.719; // the standard normal's 1e-4 upper quantile
        var a = 2.0 / (9 * degrees);
        return degrees * Math.Pow(1 - a + z * Math.Sqrt(a), 3);
    }

    private static void AssertFits(int[] observed, double[] probabilities, int runs, double criticalValue)
    {
        var chiSquare = 0.0;
        for (var i = 0; i < observed.Length; i++)
        {
            if (probabilities[i] == 0)
            {
                Assert.Equal(0, observed[i]); // top-k removed it: it must never be drawn
                continue;
            }
            var expected = probabilities[i] * runs;
            chiSquare += (observed[i] - expected) * (observed[i] - expected) / expected;
        }
        Assert.True(chiSquare < criticalValue, $"chi-square {chiSquare:F1} over the bound {criticalValue:F1}");
    }

    [Fact]
    public void A_sink_that_ends_the_sequence_stops_the_verification()
    {
        var table = BigramTable(10);
        var last = 2;
        int Best(int previous) => System.Numerics.Tensors.TensorPrimitives.IndexOfMax(Row(table, previous));
        int[] right = [Best(last), Best(Best(last)), Best(Best(Best(last)))];
        using var sampler = new Sampler(SamplingParameters.Greedy, Vocab, []);
        var sink = new StopAfter(sampler, 2);
        var accepted = DraftVerifier.Verify(sampler, new SamplingWorkspace(Vocab), VerificationLogits(table, last, right), right, [], ref sink);
        Assert.Equal(1, accepted);
        Assert.Equal(2, sink.Taken);
    }

    private struct StopAfter(Sampler sampler, int limit) : IVerifiedTokenSink
    {
        public int Taken { get; private set; }

        public bool Take(SampledToken token, int alternativesWritten)
        {
            sampler.Accept(token.Id);
            return ++Taken < limit;
        }
    }

    [Fact]
    public void Bad_arguments_are_refused()
    {
        using var sampler = new Sampler(SamplingParameters.Greedy, Vocab, []);
        var workspace = new SamplingWorkspace(Vocab);
        var chosen = new int[4];
        Assert.Throws<ArgumentException>(() => DraftVerifier.Verify(sampler, workspace, new float[Vocab], [1], chosen));
        Assert.Throws<ArgumentOutOfRangeException>(() => DraftVerifier.Verify(sampler, workspace, new float[2 * Vocab], [Vocab], chosen));
        Assert.Throws<ArgumentException>(() => DraftVerifier.Verify(sampler, workspace, new float[3 * Vocab], [1, 2], new int[2]));
        Assert.Throws<ArgumentException>(() => DraftVerifier.VerifyGreedy(new float[Vocab + 1], Vocab, [], chosen));
    }
}
