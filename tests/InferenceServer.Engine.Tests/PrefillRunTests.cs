using static InferenceServer.Engine.Tests.EngineFixture;

namespace InferenceServer.Engine.Tests;

/// <summary>
/// On the dense path the prefills of an iteration are separate model runs, applied as each ends:
/// a prompt's first token goes out when its own run does, not when the iteration's last run does.
/// </summary>
public sealed class PrefillRunTests(EngineFixture model) : IClassFixture<EngineFixture>
{
    [Fact]
    public async Task A_prompt_has_its_first_token_before_the_next_prefill_run_starts()
    {
        // 16-token chunks and no time limit: a 40-token prompt ends with a chunk on its past (a run
        // of its own) in the iteration where a fresh 10-token prompt runs too.
        await using var test = new EngineUnderTest(model, options: new EngineOptions { PrefillChunkTokens = 16, IterationTimeBudget = TimeSpan.Zero });
        var chunked = test.Submit(Greedy(Prompt(40, 3), 3));
        test.Step();
        test.Step();
        var fresh = test.Submit(Greedy(Prompt(10, 5), 3));

        var tokensBeforeEachStep = new List<(int Chunked, int Fresh)>();
        test.Recorder.BeforeStep = () => tokensBeforeEachStep.Add((chunked.TokenCount, fresh.TokenCount));
        var stepsBefore = test.Recorder.Steps.Count;
        test.Step();
        test.Recorder.BeforeStep = null;

        var prefillRuns = test.Recorder.Steps.Skip(stepsBefore).Count(s => s.Rows.Any(r => r.TokenCount > 1));
        Assert.Equal(2, prefillRuns);
        // Before the first run neither has a token; before the second, the prompt of the first run has its first.
        Assert.Equal((0, 0), tokensBeforeEachStep[0]);
        Assert.Equal(1, tokensBeforeEachStep[1].Chunked + tokensBeforeEachStep[1].Fresh);

        var results = await test.RunAsync(chunked, fresh);
        Assert.All(results, r => Assert.Equal(3, r.TokenIds.Count));
        test.AssertIdle();
    }
}
