using static InferenceServer.Engine.Tests.EngineFixture;

namespace InferenceServer.Engine.Tests;

/// <summary>Prefill chunks sized from measured step costs so an iteration stays within its time budget.</summary>
public sealed class IterationBudgetTests(TokenizerFixture model) : IClassFixture<TokenizerFixture>
{
    private static readonly TimeSpan Ms = TimeSpan.FromMilliseconds(1);

    [Fact]
    public void Without_a_budget_time_sets_no_limit()
    {
        var cost = new StepCost(TimeSpan.Zero);
        cost.Prefill(100, 10 * Ms);
        Assert.False(cost.Enabled);
        Assert.Equal(int.MaxValue, cost.PrefillTokens(decoding: 1, prompts: 1));
    }

    [Fact]
    public void Chunks_fill_what_the_budget_leaves_after_the_decode_step()
    {
        var cost = new StepCost(25 * Ms);
        Assert.Equal(StepCost.FirstPrefillTokens, cost.PrefillTokens(decoding: 0, prompts: 1)); // nothing measured yet
        cost.Prefill(100, 10 * Ms); // 0.1 ms a token
        Assert.Equal(250, cost.PrefillTokens(decoding: 0, prompts: 1));
        cost.Decode(5 * Ms);
        Assert.Equal(200, cost.PrefillTokens(decoding: 1, prompts: 1));
        Assert.Equal(250, cost.PrefillTokens(decoding: 0, prompts: 1));
    }

    [Fact]
    public void Costs_follow_recent_steps_and_prompts_always_progress()
    {
        var cost = new StepCost(25 * Ms);
        cost.Prefill(100, 10 * Ms);
        cost.Prefill(8, 80 * Ms); // too few tokens to say what a token costs: ignored
        Assert.Equal(250, cost.PrefillTokens(decoding: 0, prompts: 1));
        cost.Prefill(100, 50 * Ms); // slower now (0.5 ms a token): the estimate moves toward it
        var after = cost.PrefillTokens(decoding: 0, prompts: 1);
        Assert.InRange(after, 50, 249);
        cost.Prefill(1_000, 10_000 * Ms); // very slow prompt tokens: the fewest an iteration computes
        Assert.Equal(StepCost.MinPrefillTokens, cost.PrefillTokens(decoding: 1, prompts: 1));
    }

    [Fact]
    public void Each_prompt_gets_at_least_the_time_of_each_decoding_sequence()
    {
        var cost = new StepCost(25 * Ms);
        cost.Prefill(100, 10 * Ms); // 0.1 ms a token
        cost.Decode(20 * Ms);
        Assert.Equal(50, cost.PrefillTokens(decoding: 4, prompts: 1)); // what the budget leaves: 5 ms
        Assert.Equal(66, cost.PrefillTokens(decoding: 3, prompts: 1)); // a third of the 20 ms decode
        Assert.Equal(200, cost.PrefillTokens(decoding: 1, prompts: 1)); // as long as the decode
        Assert.Equal(800, cost.PrefillTokens(decoding: 2, prompts: 8)); // a queue of prompts: four decodes' time
        Assert.Equal(250, cost.PrefillTokens(decoding: 0, prompts: 8)); // nothing decodes: the budget
    }

    [Fact]
    public async Task A_long_prompt_is_computed_in_chunks_that_fit_the_budget()
    {
        // Steps that take 0.5 ms a prompt token and an 8 ms budget: after the first, unmeasured,
        // chunk, no chunk can be longer than the fewest an iteration computes.
        var executor = new ScriptedExecutor(model.Tokenizer.VocabSize) { PrefillCostPerToken = 0.5 * Ms, DecodeCost = Ms };
        await using var engine = ScriptedEngines.Create(model.Tokenizer, executor, new EngineOptions { IterationTimeBudget = 8 * Ms });
        var output = engine.Submit(Greedy(Prompt(200, 90), 6));
        for (var i = 0; i < 100 && !output.IsFinished; i++)
            engine.Iterate();
        var result = await output.CollectAsync();
        Assert.Equal(6, result.TokenIds.Count);
        var prefills = executor.Plans.SelectMany(p => p).Where(r => r.Prefill).Select(r => r.Count).ToList();
        Assert.Equal(StepCost.FirstPrefillTokens, prefills[0]);
        Assert.All(prefills.Skip(1), tokens => Assert.True(tokens <= StepCost.MinPrefillTokens, $"a chunk of {tokens} tokens"));
        Assert.Equal(200, prefills.Sum());
    }
}
