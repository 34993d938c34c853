using InferenceServer.Engine.Sampling;

namespace InferenceServer.Engine.Tests;

/// <summary>
/// Sampling from the best logits a paged step reduces on the device must choose what sampling
/// from the whole row chooses, draw for draw, whenever the sampler says it can.
/// </summary>
public class SampleFromTopTests
{
    private const int Vocab = 2000;
    private const int Top = 64;

    public static TheoryData<double, int, double, double> Parameters => new()
    {
        { 1.0, 10, 1.0, 0.0 },
        { 0.7, 40, 1.0, 0.0 },
        { 0.8, 64, 0.9, 0.0 },
        { 1.3, 20, 0.95, 0.05 },
        { 0.5, 5, 1.0, 0.2 },
        { 2.0, 3, 0.5, 0.0 },
    };

    [Theory]
    [MemberData(nameof(Parameters))]
    public void The_best_logits_give_the_tokens_and_logprobs_the_whole_row_gives(double temperature, int topK, double topP, double minP)
    {
        var parameters = new SamplingParameters { Temperature = temperature, TopK = topK, TopP = topP, MinP = minP, Seed = 99, Logprobs = 4 };
        using var whole = new Sampler(parameters, Vocab, []);
        using var reduced = new Sampler(parameters, Vocab, []);
        Assert.True(reduced.CanSampleFromTop(Top));
        var workspace = new SamplingWorkspace(Vocab);
        var random = new Random(7);
        var logits = new float[Vocab];
        var wholeAlternatives = new TopLogprob[4];
        var reducedAlternatives = new TopLogprob[4];
        var distinct = new HashSet<int>();
        for (var step = 0; step < 300; step++)
        {
            // Peaked enough that several tokens compete, as a language model's logits do.
            for (var i = 0; i < Vocab; i++)
                logits[i] = (float)(random.NextDouble() * 6 + (random.Next(50) == 0 ? 4 : 0));
            var (topLogits, topIds, logSumExp) = Reduce(logits);

            var expected = whole.Sample(logits, workspace, wholeAlternatives, out var expectedWritten);
            var actual = reduced.SampleFromTop(topLogits, topIds, logSumExp, workspace, reducedAlternatives, out var actualWritten);

            Assert.Equal(expected.Id, actual.Id);
            Assert.Equal(expected.Logprob, actual.Logprob, tolerance: 1e-4);
            Assert.Equal(expectedWritten, actualWritten);
            for (var i = 0; i < actualWritten; i++)
            {
                Assert.Equal(wholeAlternatives[i].Id, reducedAlternatives[i].Id);
                Assert.Equal(wholeAlternatives[i].Logprob, reducedAlternatives[i].Logprob, tolerance: 1e-4);
            }
            distinct.Add(actual.Id);
        }
        Assert.True(topK == 1 || distinct.Count > 5, "the draws should vary");
    }

    [Fact]
    public void Greedy_takes_the_best()
    {
        using var sampler = new Sampler(SamplingParameters.Greedy with { Logprobs = 2 }, 4, []);
        var alternatives = new TopLogprob[2];
        var token = sampler.SampleFromTop([3f, 1f], [2L, 0L], 3.5f, new SamplingWorkspace(4), alternatives, out var written);
        Assert.Equal(2, token.Id);
        Assert.Equal(-0.5f, token.Logprob);
        Assert.Equal(2, written);
        Assert.Equal(new TopLogprob(0, -2.5f), alternatives[1]);
    }

    [Theory]
    [InlineData(0.0, 0, 0, 1.0, true)] // greedy
    [InlineData(0.8, 64, 0, 1.0, true)] // top-k within the reduction
    [InlineData(0.8, 65, 0, 1.0, false)] // top-k wider than it
    [InlineData(0.8, 0, 0, 1.0, false)] // the whole vocabulary
    [InlineData(0.0, 0, 20, 1.0, true)]
    [InlineData(0.8, 10, 20, 1.0, true)]
    [InlineData(0.8, 10, 0, 1.3, false)] // a penalty changes every logit
    [InlineData(0.0, 0, 0, 1.3, false)]
    public void Whether_the_best_logits_are_enough(double temperature, int topK, int logprobs, double repetitionPenalty, bool expected)
    {
        var parameters = new SamplingParameters { Temperature = temperature, TopK = topK, Logprobs = logprobs, RepetitionPenalty = repetitionPenalty };
        using var sampler = new Sampler(parameters, Vocab, []);
        Assert.Equal(expected, sampler.CanSampleFromTop(Top));
        if (logprobs > 0)
            Assert.False(sampler.CanSampleFromTop(logprobs - 1)); // fewer than the alternatives asked for
    }

    [Fact]
    public void Parameters_that_need_the_whole_row_are_refused()
    {
        using var sampler = new Sampler(new SamplingParameters { Temperature = 0.8 }, Vocab, []);
        var e = Assert.Throws<InvalidOperationException>(() =>
            sampler.SampleFromTop([1f], [0L], 1f, new SamplingWorkspace(Vocab), [], out _));
        Assert.Contains("whole logits row", e.Message, StringComparison.Ordinal);
    }

    /// <summary>What the graph reduces a row to: the best logits, best first, and the row's logsumexp.</summary>
    private static (float[] Logits, long[] Ids, float LogSumExp) Reduce(float[] logits)
    {
        var ids = Enumerable.Range(0, logits.Length).OrderByDescending(i => logits[i]).ThenBy(i => i).Take(Top).ToArray();
        var max = logits[ids[0]];
        var sum = logits.Sum(l => Math.Exp(l - max));
        return (ids.Select(i => logits[i]).ToArray(), ids.Select(i => (long)i).ToArray(), max + (float)Math.Log(sum));
    }
}
