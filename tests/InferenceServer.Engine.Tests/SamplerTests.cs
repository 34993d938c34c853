using InferenceServer.Engine.Sampling;

namespace InferenceServer.Engine.Tests;

public class SamplerTests
{
    // Large enough that an empirical frequency is within about 0.004 (one standard deviation) of its probability.
    private const int Draws = 20_000;
    private const double FrequencyTolerance = 0.015;

    private const int QwenVocabSize = 151_936;

    // ---- greedy ----

    [Fact]
    public void Greedy_picks_the_largest_logit()
    {
        float[] logits = [1f, 3f, 2f, -1f, 2.999f];
        Assert.Equal(1, SampleOnce(SamplingParameters.Greedy, logits).Id);
    }

    [Fact]
    public void Greedy_breaks_ties_toward_the_lower_id()
    {
        float[] logits = [0f, 5f, 2f, 5f, 5f];
        Assert.Equal(1, SampleOnce(SamplingParameters.Greedy, logits).Id);
        float[] allEqual = [-7f, -7f, -7f];
        Assert.Equal(0, SampleOnce(SamplingParameters.Greedy, allEqual).Id);
    }

    [Fact]
    public void Top_k_of_one_chooses_as_greedy_does()
    {
        var random = new Random(11);
        var workspace = new SamplingWorkspace(32);
        using var greedy = new Sampler(SamplingParameters.Greedy, 32, []);
        using var topOne = new Sampler(new SamplingParameters { TopK = 1, Temperature = 1.5, Seed = 5 }, 32, []);
        for (var step = 0; step < 200; step++)
        {
            // Few distinct values, so ties are common.
            var logits = Enumerable.Range(0, 32).Select(_ => (float)random.Next(0, 6)).ToArray();
            Assert.Equal(greedy.Sample(logits, workspace).Id, topOne.Sample(logits, workspace).Id);
        }
    }

    // ---- seeds and independence ----

    [Fact]
    public void The_same_seed_gives_the_same_tokens_and_another_seed_others()
    {
        float[] logits = [0f, 0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f];
        var parameters = new SamplingParameters { Seed = 42 };
        var first = DrawSequence(parameters, logits, 200);
        var second = DrawSequence(parameters, logits, 200);
        var otherSeed = DrawSequence(parameters with { Seed = 43 }, logits, 200);
        Assert.Equal(first, second);
        Assert.NotEqual(first, otherSeed);
        Assert.True(first.Distinct().Count() > 4, "the draws should cover most of the vocabulary");
    }

    [Fact]
    public void Unseeded_samplers_draw_differently()
    {
        float[] logits = [0f, 0f, 0f, 0f, 0f, 0f, 0f, 0f];
        var parameters = new SamplingParameters();
        Assert.NotEqual(DrawSequence(parameters, logits, 100), DrawSequence(parameters, logits, 100));
    }

    [Fact]
    public void A_sampler_is_not_affected_by_another_one_used_in_between()
    {
        float[] logits = [0.3f, -0.2f, 1.1f, 0.9f, 0f, 0.5f];
        float[] otherLogits = [2f, 1f, 0f, -1f, 0f, 1f];
        var parameters = new SamplingParameters { Seed = 7, TopP = 0.95, Temperature = 0.9 };
        var alone = DrawSequence(parameters, logits, 100);

        var workspace = new SamplingWorkspace(6);
        using var sampler = new Sampler(parameters, 6, []);
        using var sameSeed = new Sampler(parameters, 6, []);
        using var otherSeed = new Sampler(parameters with { Seed = 8, TopK = 3 }, 6, []);
        var interleaved = new int[100];
        for (var i = 0; i < interleaved.Length; i++)
        {
            sameSeed.Sample(otherLogits, workspace);
            interleaved[i] = sampler.Sample(logits, workspace).Id;
            otherSeed.Sample(otherLogits, workspace);
            otherSeed.Sample(logits, workspace);
        }
        Assert.Equal(alone, interleaved);
    }

    [Fact]
    public void Each_call_makes_exactly_one_draw_from_the_seeded_generator()
    {
        // Uniform logits: the token is floor(u * 4) of the generator's next double.
        float[] logits = [1f, 1f, 1f, 1f];
        var tokens = DrawSequence(new SamplingParameters { Seed = 99 }, logits, 50);
        var generator = new Xoshiro256StarStar(99);
        var expected = Enumerable.Range(0, 50).Select(_ => (int)(generator.NextDouble() * 4)).ToArray();
        Assert.Equal(expected, tokens);
    }

    [Theory]
    [InlineData(0UL, new[] { 0x99ec5f36cb75f2b4UL, 0xbf6e1f784956452aUL, 0x1a5f849d4933e6e0UL, 0x6aa594f1262d2d2cUL })]
    [InlineData(42UL, new[] { 0x15780b2e0c2ec716UL, 0x6104d9866d113a7eUL, 0xae17533239e499a1UL, 0xecb8ad4703b360a1UL })]
    public void The_generator_is_xoshiro256starstar_seeded_by_splitmix64(ulong seed, ulong[] expected)
    {
        // Computed with an independent transcription of the published algorithms (SplitMix64 from
        // 0 gives e220a8397b1dcdaf, 6e789e6aa1b965f4, 06c45d188009454f, f88bb8a8724c81ec).
        var generator = new Xoshiro256StarStar(seed);
        Assert.Equal(expected, Enumerable.Range(0, expected.Length).Select(_ => generator.NextUInt64()));
    }

    [Fact]
    public void Uniform_doubles_are_in_the_unit_interval_and_use_the_top_53_bits()
    {
        var bits = new Xoshiro256StarStar(7);
        var doubles = new Xoshiro256StarStar(7);
        for (var i = 0; i < 1000; i++)
        {
            var value = doubles.NextDouble();
            Assert.InRange(value, 0.0, Math.BitDecrement(1.0));
            Assert.Equal((bits.NextUInt64() >> 11) / 9007199254740992.0, value);
        }
    }

    // ---- temperature ----

    [Theory]
    [InlineData(0.5)]
    [InlineData(1.0)]
    [InlineData(2.0)]
    public void Frequencies_follow_the_softmax_at_the_temperature(double temperature)
    {
        float[] logits = [2f, 1f, 0f, -1f, 0.5f];
        var frequencies = Frequencies(new SamplingParameters { Temperature = temperature, Seed = 1234 }, logits, Draws);
        AssertClose(Softmax(logits, temperature), frequencies);
    }

    [Fact]
    public void A_higher_temperature_flattens_the_distribution()
    {
        float[] logits = [2f, 1f, 0f, -1f, 0.5f];
        var cold = Frequencies(new SamplingParameters { Temperature = 0.5, Seed = 3 }, logits, Draws);
        var neutral = Frequencies(new SamplingParameters { Temperature = 1.0, Seed = 3 }, logits, Draws);
        var hot = Frequencies(new SamplingParameters { Temperature = 2.0, Seed = 3 }, logits, Draws);
        Assert.True(cold[0] > neutral[0] + 0.1 && neutral[0] > hot[0] + 0.1, $"{cold[0]} > {neutral[0]} > {hot[0]}");
        Assert.True(cold[3] < neutral[3] && neutral[3] < hot[3], $"{cold[3]} < {neutral[3]} < {hot[3]}");
    }

    // ---- truncation ----

    [Fact]
    public void Top_k_keeps_exactly_the_k_largest()
    {
        float[] logits = [0.5f, 3f, 1f, 2.5f, -1f, 2f];
        var frequencies = Frequencies(new SamplingParameters { TopK = 3, Seed = 17 }, logits, Draws);
        var expected = RenormalizedOver(Softmax(logits, 1.0), [1, 3, 5]);
        AssertClose(expected, frequencies);
        Assert.Equal(0, frequencies[0]);
        Assert.Equal(0, frequencies[2]);
        Assert.Equal(0, frequencies[4]);
    }

    [Fact]
    public void Top_k_breaks_ties_at_the_boundary_toward_lower_ids()
    {
        float[] logits = [1f, 2f, 1f, 1f, 1f];
        var frequencies = Frequencies(new SamplingParameters { TopK = 2, Seed = 4 }, logits, 4000);
        Assert.True(frequencies[0] > 0.2 && frequencies[1] > 0.6);
        Assert.Equal(1.0, frequencies[0] + frequencies[1], 9);
    }

    [Fact]
    public void Top_p_keeps_the_smallest_prefix_reaching_the_mass()
    {
        var logits = LogitsOf(0.5, 0.3, 0.15, 0.05);
        var probabilities = new[] { 0.5, 0.3, 0.15, 0.05 };

        var exactlyReached = Frequencies(new SamplingParameters { TopP = 0.8, Seed = 21 }, logits, Draws);
        AssertClose(RenormalizedOver(probabilities, [0, 1]), exactlyReached);

        var justAbove = Frequencies(new SamplingParameters { TopP = 0.81, Seed = 21 }, logits, Draws);
        AssertClose(RenormalizedOver(probabilities, [0, 1, 2]), justAbove);
        Assert.True(justAbove[2] > 0.1);
        Assert.Equal(0, justAbove[3]);

        var tiny = Frequencies(new SamplingParameters { TopP = 0.01, Seed = 21 }, logits, 500);
        Assert.Equal(1.0, tiny[0]);
    }

    [Fact]
    public void Top_p_ranks_by_probability_not_by_id()
    {
        var probabilities = new[] { 0.15, 0.05, 0.5, 0.3 };
        var frequencies = Frequencies(new SamplingParameters { TopP = 0.8, Seed = 22 }, LogitsOf(probabilities), Draws);
        AssertClose(RenormalizedOver(probabilities, [2, 3]), frequencies);
    }

    [Theory]
    [InlineData(0)] // min-p alone
    [InlineData(4)] // after top-k = 4, which drops only 0.03, under either bar anyway
    public void Min_p_drops_exactly_the_tokens_below_min_p_times_the_best(int topK)
    {
        var probabilities = new[] { 0.4, 0.3, 0.2, 0.07, 0.03 };
        var logits = LogitsOf(probabilities);

        // 0.2 * 0.4 = 0.08: 0.07 goes.
        var strict = Frequencies(new SamplingParameters { MinP = 0.2, TopK = topK, Seed = 8 }, logits, Draws);
        AssertClose(RenormalizedOver(probabilities, [0, 1, 2]), strict);

        // 0.1 * 0.4 = 0.04: 0.07 stays, 0.03 goes.
        var loose = Frequencies(new SamplingParameters { MinP = 0.1, TopK = topK, Seed = 8 }, logits, Draws);
        AssertClose(RenormalizedOver(probabilities, [0, 1, 2, 3]), loose);
        Assert.True(loose[3] > 0.04);
    }

    [Fact]
    public void Min_p_uses_the_probabilities_at_the_temperature()
    {
        // At T = 2 the probabilities are proportional to sqrt: 0.4 -> 0.632, 0.1 -> 0.316, 0.02 -> 0.141.
        var logits = LogitsOf(0.4, 0.1, 0.02);
        var frequencies = Frequencies(new SamplingParameters { MinP = 0.3, Temperature = 2, Seed = 8 }, logits, Draws);
        Assert.True(frequencies[1] > 0.2);
        Assert.Equal(0, frequencies[2]);
    }

    [Fact]
    public void Top_p_applies_to_what_top_k_kept_renormalized()
    {
        var probabilities = new[] { 0.3, 0.25, 0.2, 0.15, 0.1 };
        var logits = LogitsOf(probabilities);

        // Alone, top_p = 0.7 needs 0.3 + 0.25 + 0.2 = 0.75.
        var topPOnly = Frequencies(new SamplingParameters { TopP = 0.7, Seed = 5 }, logits, Draws);
        AssertClose(RenormalizedOver(probabilities, [0, 1, 2]), topPOnly);

        // After top-k = 3 the three have 0.4, 0.333, 0.267: the first two reach 0.7.
        var both = Frequencies(new SamplingParameters { TopK = 3, TopP = 0.7, Seed = 5 }, logits, Draws);
        AssertClose(RenormalizedOver(probabilities, [0, 1]), both);
    }

    [Fact]
    public void Top_p_then_min_p()
    {
        var probabilities = new[] { 0.5, 0.2, 0.12, 0.1, 0.08 };
        var logits = LogitsOf(probabilities);
        // top_p = 0.9 keeps four (0.92); min_p = 0.22 then drops those under 0.11.
        var frequencies = Frequencies(new SamplingParameters { TopP = 0.9, MinP = 0.22, Seed = 6 }, logits, Draws);
        AssertClose(RenormalizedOver(probabilities, [0, 1, 2]), frequencies);
    }

    [Fact]
    public void Banned_tokens_are_never_drawn()
    {
        float[] logits = [float.NegativeInfinity, 0f, float.NegativeInfinity, 0f];
        foreach (var parameters in new SamplingParameters[] { new() { Seed = 1 }, new() { TopK = 3, Seed = 1 }, new() { TopP = 0.99, Seed = 1 }, new() { MinP = 0.5, Seed = 1 } })
        {
            var frequencies = Frequencies(parameters, logits, 2000);
            Assert.Equal(0, frequencies[0]);
            Assert.Equal(0, frequencies[2]);
        }
    }

    // ---- penalties ----

    [Theory]
    [InlineData(1.30, 0)] // 2 / 1.30 = 1.538 > 1.5
    [InlineData(1.34, 1)] // 2 / 1.34 = 1.493 < 1.5
    public void Repetition_penalty_divides_a_positive_logit_of_a_prompt_token(double penalty, int expected)
    {
        float[] logits = [2f, 1.5f, 0f];
        var parameters = SamplingParameters.Greedy with { RepetitionPenalty = penalty };
        Assert.Equal(expected, SampleOnce(parameters, logits, prompt: [0, 2, 2]).Id);
    }

    [Theory]
    [InlineData(1.19, 0)] // -1 * 1.19 = -1.19 > -1.2
    [InlineData(1.21, 1)] // -1 * 1.21 = -1.21 < -1.2
    public void Repetition_penalty_multiplies_a_negative_logit_of_a_generated_token(double penalty, int expected)
    {
        float[] logits = [-1f, -1.2f, -5f];
        var workspace = new SamplingWorkspace(3);
        using var sampler = new Sampler(SamplingParameters.Greedy with { RepetitionPenalty = penalty }, 3, []);
        Assert.Equal(0, sampler.Sample(logits, workspace).Id);
        sampler.Accept(0);
        Assert.Equal(expected, sampler.Sample(logits, workspace).Id);
        // Once per distinct token, however often it occurs.
        sampler.Accept(0);
        sampler.Accept(0);
        Assert.Equal(expected, sampler.Sample(logits, workspace).Id);
    }

    [Fact]
    public void Repetition_penalty_spares_unseen_tokens()
    {
        // A penalty below 1 favours seen tokens; token 1 was not seen and keeps its logit.
        float[] logits = [1f, 1.5f, 0f];
        var parameters = SamplingParameters.Greedy with { RepetitionPenalty = 0.5 };
        Assert.Equal(0, SampleOnce(parameters, logits, prompt: [0]).Id); // 1 / 0.5 = 2 > 1.5
        Assert.Equal(1, SampleOnce(parameters, logits, prompt: [2]).Id);
    }

    [Theory]
    [InlineData(0.3, 0.35, 0)] // 3 - 2 * 0.3 - 0.35 = 2.05 > 2
    [InlineData(0.3, 0.45, 1)] // 3 - 2 * 0.3 - 0.45 = 1.95 < 2
    [InlineData(0.45, 0.05, 0)] // 3 - 0.9 - 0.05 = 2.05
    [InlineData(0.55, 0.0, 1)] // 3 - 1.1 = 1.9
    public void Frequency_and_presence_subtract_count_times_frequency_plus_presence(double frequency, double presence, int expected)
    {
        float[] logits = [3f, 2f, 0f];
        var workspace = new SamplingWorkspace(3);
        var parameters = SamplingParameters.Greedy with { FrequencyPenalty = frequency, PresencePenalty = presence };
        using var sampler = new Sampler(parameters, 3, []);
        sampler.Accept(0);
        sampler.Accept(0);
        Assert.Equal(expected, sampler.Sample(logits, workspace).Id);
    }

    [Fact]
    public void Frequency_and_presence_ignore_the_prompt()
    {
        float[] logits = [3f, 2f];
        var parameters = SamplingParameters.Greedy with { FrequencyPenalty = 2, PresencePenalty = 2 };
        Assert.Equal(0, SampleOnce(parameters, logits, prompt: [0, 0, 0]).Id);
    }

    [Fact]
    public void Penalties_combine_in_order_repetition_then_frequency_and_presence()
    {
        // Token 0, generated once: 3 / 1.5 = 2, then - 1 * 0.4 - 0.2 = 1.4, so an unseen rival at
        // 1.39 loses and at 1.41 wins. (In the other order it would be (3 - 0.6) / 1.5 = 1.6.)
        var parameters = SamplingParameters.Greedy with { RepetitionPenalty = 1.5, FrequencyPenalty = 0.4, PresencePenalty = 0.2 };
        var workspace = new SamplingWorkspace(2);
        foreach (var (rival, expected) in new[] { (1.39f, 0), (1.41f, 1) })
        {
            using var sampler = new Sampler(parameters, 2, []);
            sampler.Accept(0);
            Assert.Equal(expected, sampler.Sample([3f, rival], workspace).Id);
        }
    }

    [Fact]
    public void Penalized_sampling_follows_the_softmax_of_the_penalized_logits()
    {
        // Three equal logits; token 0 generated twice: 0 - 2 * 0.5 - 0.25 = -1.25.
        float[] logits = [0f, 0f, 0f];
        var parameters = new SamplingParameters { FrequencyPenalty = 0.5, PresencePenalty = 0.25, Seed = 77, Logprobs = 1 };
        var workspace = new SamplingWorkspace(3);
        using var sampler = new Sampler(parameters, 3, []);
        sampler.Accept(0);
        sampler.Accept(0);
        var counts = new int[3];
        for (var i = 0; i < Draws; i++)
        {
            var token = sampler.Sample(logits, workspace);
            counts[token.Id]++;
            // The reported log-probability is the raw one, 1/3 each, whatever the penalty did.
            Assert.Equal(Math.Log(1.0 / 3), token.Logprob, 1e-6);
        }
        AssertClose(Softmax([-1.25f, 0f, 0f], 1.0), counts.Select(c => (double)c / Draws).ToArray());
    }

    [Fact]
    public void Without_logprobs_requested_the_logprob_is_not_computed()
    {
        using var sampler = new Sampler(SamplingParameters.Greedy, 3, []);
        var token = sampler.Sample([0f, 2f, 1f], new SamplingWorkspace(3));
        Assert.Equal(1, token.Id);
        Assert.True(float.IsNaN(token.Logprob));
    }

    [Fact]
    public void Accept_rejects_ids_outside_the_vocabulary()
    {
        using var sampler = new Sampler(new SamplingParameters { PresencePenalty = 1 }, 10, []);
        Assert.Throws<ArgumentOutOfRangeException>(() => sampler.Accept(10));
        Assert.Throws<ArgumentOutOfRangeException>(() => sampler.Accept(-1));
        Assert.Throws<ArgumentOutOfRangeException>(() => new Sampler(new SamplingParameters { RepetitionPenalty = 2 }, 10, [3, 12]));
    }

    [Fact]
    public void Many_distinct_generated_tokens_are_all_penalized()
    {
        // More distinct tokens than the initial capacity of the seen-token list.
        const int vocabSize = 1000;
        var logits = new float[vocabSize];
        for (var i = 0; i < vocabSize; i++)
            logits[i] = 10f - i * 0.001f;
        var workspace = new SamplingWorkspace(vocabSize);
        using var sampler = new Sampler(SamplingParameters.Greedy with { PresencePenalty = 2 }, vocabSize, []);
        for (var expected = 0; expected < 300; expected++)
        {
            var token = sampler.Sample(logits, workspace).Id;
            Assert.Equal(expected, token);
            sampler.Accept(token);
        }
    }

    // ---- log-probabilities ----

    [Fact]
    public void Logprobs_are_the_raw_log_softmax_whatever_the_sampling_does()
    {
        const int vocabSize = 50;
        var random = new Random(3);
        var logits = Enumerable.Range(0, vocabSize).Select(_ => (float)(random.NextDouble() * 8 - 4)).ToArray();
        logits[7] = logits[3] = 6f; // a tie at the top: id 3 first
        logits[20] = logits[12] = 5.5f;
        var expected = LogSoftmax(logits);
        var expectedTop = Enumerable.Range(0, vocabSize).OrderByDescending(i => expected[i]).ThenBy(i => i).Take(5).ToArray();
        Assert.Equal([3, 7, 12, 20], expectedTop[..4]);

        var plain = new SamplingParameters { Logprobs = 5, Seed = 1 };
        var heavilyModified = plain with { Temperature = 0.3, TopK = 4, TopP = 0.7, RepetitionPenalty = 2, FrequencyPenalty = 1.5, PresencePenalty = 2 };
        var workspace = new SamplingWorkspace(vocabSize);
        var alternatives = new TopLogprob[8];
        foreach (var parameters in new[] { plain, heavilyModified, heavilyModified with { Temperature = 0 } })
        {
            using var sampler = new Sampler(parameters, vocabSize, [3, 7, 12]);
            for (var step = 0; step < 20; step++)
            {
                var token = sampler.Sample(logits, workspace, alternatives, out var written);
                Assert.Equal(5, written);
                Assert.Equal(expected[token.Id], token.Logprob, 1e-5);
                for (var i = 0; i < written; i++)
                {
                    Assert.Equal(expectedTop[i], alternatives[i].Id);
                    Assert.Equal(expected[expectedTop[i]], alternatives[i].Logprob, 1e-5);
                }
                sampler.Accept(token.Id);
            }
        }
    }

    [Fact]
    public void Alternatives_are_limited_by_the_request_the_span_and_the_vocabulary()
    {
        float[] logits = [1f, 2f, 3f];
        var workspace = new SamplingWorkspace(3);
        var alternatives = new TopLogprob[10];

        using var none = new Sampler(new SamplingParameters { Logprobs = 0 }, 3, []);
        none.Sample(logits, workspace, alternatives, out var written);
        Assert.Equal(0, written);

        using var two = new Sampler(new SamplingParameters { Logprobs = 2 }, 3, []);
        two.Sample(logits, workspace, alternatives, out written);
        Assert.Equal(2, written);
        Assert.Equal([2, 1], alternatives[..2].Select(a => a.Id));

        using var many = new Sampler(new SamplingParameters { Logprobs = 20 }, 3, []);
        many.Sample(logits, workspace, alternatives, out written);
        Assert.Equal(3, written);
        many.Sample(logits, workspace, alternatives.AsSpan(0, 1), out written);
        Assert.Equal(1, written);
        Assert.Equal(2, alternatives[0].Id);
    }

    [Fact]
    public void Logprobs_are_accurate_on_a_large_vocabulary()
    {
        var logits = RandomLogits(QwenVocabSize, seed: 5);
        var expected = LogSoftmax(logits);
        var expectedTop = Enumerable.Range(0, logits.Length).OrderByDescending(i => expected[i]).ThenBy(i => i).Take(20).ToArray();
        using var sampler = new Sampler(new SamplingParameters { Logprobs = 20, TopP = 0.9, Seed = 2 }, logits.Length, []);
        var alternatives = new TopLogprob[20];
        var token = sampler.Sample(logits, new SamplingWorkspace(logits.Length), alternatives, out var written);
        Assert.Equal(20, written);
        Assert.Equal(expected[token.Id], token.Logprob, 1e-5);
        for (var i = 0; i < written; i++)
        {
            Assert.Equal(expectedTop[i], alternatives[i].Id);
            Assert.Equal(expected[expectedTop[i]], alternatives[i].Logprob, 1e-5);
        }
    }

    // ---- exactness of the partial selection on a real-sized vocabulary ----

    // Gaussian logits with standard deviation `spread` (and optionally a few hundred peaks):
    // the spread sets the nucleus size, e.g. at T = 1 and top_p = 0.9 about 500 tokens for 4,
    // 6,500 for 3 and 93,000 for 1. Sizes are checked on the reference, so each case does test
    // what its name says.
    public static TheoryData<string, SamplingParameters, double, int, int, int> LargeVocabularyCases => new()
    {
        { "top-p, peaked", new SamplingParameters { TopP = 0.9, Temperature = 0.8 }, 2, 300, 5, 100 },
        { "top-p, hundreds", new SamplingParameters { TopP = 0.9 }, 4, 0, 200, 2000 },
        { "top-p, thousands", new SamplingParameters { TopP = 0.9 }, 3, 0, 4000, 20_000 },
        { "top-p, most of the vocabulary", new SamplingParameters { TopP = 0.9 }, 1, 0, 50_000, 140_000 },
        { "top-k then top-p", new SamplingParameters { TopK = 2000, TopP = 0.95, Temperature = 0.7 }, 3, 0, 100, 1999 },
        { "top-k alone, flat", new SamplingParameters { TopK = 5000, Temperature = 1.3 }, 1, 0, 5000, 5000 },
        { "min-p alone", new SamplingParameters { MinP = 0.05 }, 1, 0, 2000, 30_000 },
        { "top-p then min-p", new SamplingParameters { TopP = 0.95, MinP = 0.01 }, 3, 0, 50, 2000 },
        { "no truncation", new SamplingParameters { Temperature = 1.0 }, 2, 0, 151_936, 151_936 },
        { "no truncation, hot, peaked", new SamplingParameters { Temperature = 1.7 }, 2, 300, 151_936, 151_936 },
    };

    [Theory]
    [MemberData(nameof(LargeVocabularyCases))]
    public void A_large_vocabulary_gives_the_tokens_of_a_full_sort_reference(string name, SamplingParameters parameters, double spread, int peaks, int fewestSurvivors, int mostSurvivors)
    {
        var logits = RandomLogits(QwenVocabSize, seed: name.Length, spread, peaks);
        var (candidates, weights) = ReferenceCandidates(logits, parameters);
        Assert.InRange(candidates.Length, fewestSurvivors, mostSurvivors);
        var workspace = new SamplingWorkspace(QwenVocabSize);
        foreach (var seed in new ulong[] { 1, 2, 3, 1_000_003 })
        {
            using var sampler = new Sampler(parameters with { Seed = seed }, QwenVocabSize, []);
            var generator = new Xoshiro256StarStar(seed);
            for (var step = 0; step < 25; step++)
            {
                var expected = ReferenceDraw(candidates, weights, generator.NextDouble());
                Assert.Equal(expected, sampler.Sample(logits, workspace).Id);
            }
        }
    }

    // ---- allocation ----

    [Fact]
    public void Sampling_allocates_nothing_after_warm_up()
    {
        var logits = RandomLogits(QwenVocabSize, seed: 9);
        var workspace = new SamplingWorkspace(160_000);
        var prompt = Enumerable.Range(0, 500).Select(i => i * 7).ToArray();
        var configurations = new SamplingParameters[]
        {
            SamplingParameters.Greedy,
            SamplingParameters.Greedy with { RepetitionPenalty = 1.3, Logprobs = 5 },
            new() { Temperature = 0.7, TopK = 40 },
            new() { TopP = 0.9 },
            new() { TopP = 0.9, Temperature = 0.6, Logprobs = 20 },
            new() { TopK = 50, TopP = 0.95, MinP = 0.05 },
            new() { MinP = 0.1 },
            new() { Temperature = 1.0 },
            new() { TopP = 0.9, RepetitionPenalty = 1.1, FrequencyPenalty = 0.5, PresencePenalty = 0.3 },
        };
        var alternatives = new TopLogprob[20];
        foreach (var parameters in configurations)
        {
            using var sampler = new Sampler(parameters with { Seed = 1 }, QwenVocabSize, prompt);
            for (var i = 0; i < 20; i++)
                sampler.Accept(sampler.Sample(logits, workspace, alternatives, out _).Id);

            // The runtime may allocate on this thread now and then while it compiles (tiering,
            // on-stack replacement); an allocation made by Sample itself shows in every round.
            var fewest = long.MaxValue;
            for (var round = 0; round < 3 && fewest > 0; round++)
            {
                var before = GC.GetAllocatedBytesForCurrentThread();
                for (var i = 0; i < 10; i++)
                    sampler.Sample(logits, workspace, alternatives, out _);
                fewest = Math.Min(fewest, GC.GetAllocatedBytesForCurrentThread() - before);
            }
            Assert.True(fewest == 0, $"{parameters}: {fewest} bytes allocated in 10 calls");
        }
    }

    // ---- misuse ----

    [Fact]
    public void Wrong_sizes_and_use_after_dispose_are_refused()
    {
        var sampler = new Sampler(new SamplingParameters { FrequencyPenalty = 1 }, 4, []);
        Assert.Throws<ArgumentException>(() => sampler.Sample(new float[5], new SamplingWorkspace(5)));
        Assert.Throws<ArgumentException>(() => sampler.Sample(new float[4], new SamplingWorkspace(3)));
        Assert.InRange(sampler.Sample(new float[4], new SamplingWorkspace(8)).Id, 0, 3); // a larger workspace is fine
        sampler.Dispose();
        sampler.Dispose();
        Assert.Throws<ObjectDisposedException>(() => sampler.Sample(new float[4], new SamplingWorkspace(4)));
        Assert.Throws<ObjectDisposedException>(() => sampler.Accept(0));
    }

    // ---- helpers ----

    private static SampledToken SampleOnce(SamplingParameters parameters, float[] logits, int[]? prompt = null)
    {
        using var sampler = new Sampler(parameters, logits.Length, prompt ?? []);
        return sampler.Sample(logits, new SamplingWorkspace(logits.Length));
    }

    private static int[] DrawSequence(SamplingParameters parameters, float[] logits, int count)
    {
        var workspace = new SamplingWorkspace(logits.Length);
        using var sampler = new Sampler(parameters, logits.Length, []);
        return Enumerable.Range(0, count).Select(_ => sampler.Sample(logits, workspace).Id).ToArray();
    }

    private static double[] Frequencies(SamplingParameters parameters, float[] logits, int draws)
    {
        var counts = new int[logits.Length];
        foreach (var token in DrawSequence(parameters, logits, draws))
            counts[token]++;
        return counts.Select(c => (double)c / draws).ToArray();
    }

    private static float[] LogitsOf(params double[] probabilities) => probabilities.Select(p => (float)Math.Log(p)).ToArray();

    private static double[] Softmax(float[] logits, double temperature)
    {
        var max = logits.Max();
        var weights = logits.Select(l => Math.Exp((l - max) / temperature)).ToArray();
        var total = weights.Sum();
        return weights.Select(w => w / total).ToArray();
    }

    private static double[] LogSoftmax(float[] logits)
    {
        double max = logits.Max();
        var logTotal = max + Math.Log(logits.Sum(l => Math.Exp(l - max)));
        return logits.Select(l => l - logTotal).ToArray();
    }

    private static double[] RenormalizedOver(double[] probabilities, int[] kept)
    {
        var total = kept.Sum(i => probabilities[i]);
        return probabilities.Select((p, i) => kept.Contains(i) ? p / total : 0).ToArray();
    }

    private static void AssertClose(double[] expected, double[] actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (var i = 0; i < expected.Length; i++)
        {
            if (expected[i] == 0)
                Assert.True(actual[i] == 0, $"token {i} was drawn with frequency {actual[i]} though it should be excluded");
            else
                Assert.True(Math.Abs(expected[i] - actual[i]) < FrequencyTolerance, $"token {i}: expected {expected[i]:F4}, drew {actual[i]:F4}");
        }
    }

    /// <summary>Gaussian logits (deterministic), optionally with a few hundred tokens raised far above the bulk, as real logits have.</summary>
    private static float[] RandomLogits(int vocabSize, int seed, double spread = 2, int peaks = 300)
    {
        var random = new Random(seed);
        var logits = new float[vocabSize];
        for (var i = 0; i < vocabSize; i++)
        {
            var gaussian = Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble());
            logits[i] = (float)(spread * gaussian);
        }
        for (var i = 0; i < peaks; i++)
            logits[random.Next(vocabSize)] += (float)(8 + 6 * random.NextDouble());
        return logits;
    }

    /// <summary>
    /// The straightforward reference: sort the whole vocabulary, apply top-k, top-p, min-p in
    /// double, and return the survivors in id order (the order the sampler's draw walks them).
    /// </summary>
    private static (int[] Candidates, double[] Weights) ReferenceCandidates(float[] logits, SamplingParameters parameters)
    {
        var ranked = Enumerable.Range(0, logits.Length).ToArray();
        Array.Sort(ranked, (a, b) => logits[a] != logits[b] ? logits[b].CompareTo(logits[a]) : a.CompareTo(b));
        double max = logits[ranked[0]];
        var weights = logits.Select(l => Math.Exp((l - max) / parameters.Temperature)).ToArray();

        var survivors = ranked;
        if (parameters.TopK > 0)
            survivors = survivors.Take(parameters.TopK).ToArray();
        if (parameters.TopP < 1)
        {
            var required = parameters.TopP * survivors.Sum(i => weights[i]) * (1 - Sampler.NucleusMassTolerance);
            var cumulative = 0.0;
            var length = 0;
            while (length < survivors.Length && cumulative < required)
                cumulative += weights[survivors[length++]];
            survivors = survivors.Take(length).ToArray();
        }
        if (parameters.MinP > 0)
            survivors = survivors.Where(i => weights[i] >= parameters.MinP * weights[ranked[0]]).ToArray();
        var inIdOrder = survivors.Order().ToArray();
        return (inIdOrder, inIdOrder.Select(i => weights[i]).ToArray());
    }

    private static int ReferenceDraw(int[] candidates, double[] weights, double uniform)
    {
        var target = uniform * weights.Sum();
        var cumulative = 0.0;
        for (var i = 0; i < candidates.Length; i++)
        {
            cumulative += weights[i];
            if (cumulative > target)
                return candidates[i];
        }
        return candidates[^1];
    }
}
