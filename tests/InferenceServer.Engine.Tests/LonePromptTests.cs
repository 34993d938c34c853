using static InferenceServer.Engine.Tests.EngineFixture;

namespace InferenceServer.Engine.Tests;

/// <summary>
/// A prompt alone in the engine is prefilled without the time budget, in a run the engine ends
/// early when the prompt is cancelled or another request arrives (the real runner's interruption,
/// asked for on the engine's thread just before the run, so it is acted on as the run starts).
/// </summary>
public sealed class LonePromptTests(EngineFixture model) : IClassFixture<EngineFixture>
{
    // A budget no chunk fits in: every budgeted prefill is cut to the fewest tokens allowed.
    private static readonly EngineOptions Tight = new() { IterationTimeBudget = TimeSpan.FromTicks(1), PrefillChunkTokens = 256 };

    [Fact]
    public async Task A_lone_prompt_is_prefilled_in_one_run_and_generates_what_budgeted_chunks_do()
    {
        var prompt = Prompt(100, 7);
        await using var lone = new EngineUnderTest(model, options: Tight);
        var alone = await lone.RunAsync(Greedy(prompt, 5));
        Assert.Equal(100, lone.Recorder.Steps.First(s => s.Rows.Any(r => r.TokenCount > 1)).Rows.Single().TokenCount);
        lone.AssertIdle();

        await using var budgeted = new EngineUnderTest(model, options: Tight with { InterruptibleLonePrompts = false });
        var chunked = await budgeted.RunAsync(Greedy(prompt, 5));
        Assert.True(budgeted.Recorder.Steps.Count(s => s.Rows.Any(r => r.TokenCount > 1)) > 1, "the budget should have cut the prompt into chunks");
        Assert.Equal(chunked.TokenIds, alone.TokenIds);
    }

    [Fact]
    public async Task Cancelling_a_lone_prompt_ends_its_run_and_frees_it()
    {
        await using var test = new EngineUnderTest(model, options: Tight);
        using var cancellation = new CancellationTokenSource();
        var output = test.Submit(Greedy(Prompt(100, 8), 5), cancellation.Token);
        test.Recorder.BeforeStep = () => cancellation.Cancel();
        test.Step();
        test.Recorder.BeforeStep = null;

        Assert.Equal(1, test.Engine.Snapshot.InterruptedPrefills);
        Assert.Equal(0, output.TokenCount);
        var result = (await test.RunAsync(output))[0];
        Assert.Equal(FinishReason.Cancelled, result.FinishReason);
        test.AssertIdle();
    }

    [Fact]
    public async Task An_arrival_ends_a_lone_prompts_run_and_both_then_generate_what_they_would_alone()
    {
        int[] first = Prompt(120, 9), second = Prompt(30, 10);
        await using var reference = new EngineUnderTest(model, options: Tight);
        var firstAlone = await reference.RunAsync(Greedy(first, 6));
        var secondAlone = await reference.RunAsync(Greedy(second, 6));

        await using var test = new EngineUnderTest(model, options: Tight);
        var a = test.Submit(Greedy(first, 6));
        GenerationOutput? b = null;
        // Before anything was measured, any arrival ends the lone run.
        test.Recorder.BeforeStep = () => b ??= test.Submit(Greedy(second, 6));
        test.Step();
        test.Recorder.BeforeStep = null;
        Assert.Equal(1, test.Engine.Snapshot.InterruptedPrefills);
        Assert.NotNull(b);

        var results = await test.RunAsync(a, b);
        Assert.Equal(firstAlone.TokenIds, results[0].TokenIds);
        Assert.Equal(secondAlone.TokenIds, results[1].TokenIds);
        Assert.Equal(1, test.Engine.Snapshot.InterruptedPrefills); // two prompts: budgeted chunks, nothing interruptible
        test.AssertIdle();
    }

    [Fact]
    public async Task An_arrival_leaves_a_lone_run_alone_when_less_than_a_budget_of_it_is_left()
    {
        // A generous budget: once the cost of prompt tokens is measured, a lone prompt's whole run
        // is expected to take less than it, so an arrival waits for it rather than waste it.
        await using var test = new EngineUnderTest(model, options: new EngineOptions { IterationTimeBudget = TimeSpan.FromSeconds(30) });
        await test.RunAsync(Greedy(Prompt(40, 11), 2));
        var a = test.Submit(Greedy(Prompt(40, 12), 3));
        GenerationOutput? b = null;
        test.Recorder.BeforeStep = () => b ??= test.Submit(Greedy(Prompt(20, 13), 3));
        test.Step();
        test.Recorder.BeforeStep = null;

        Assert.Equal(0, test.Engine.Snapshot.InterruptedPrefills);
        Assert.True(a.TokenCount > 0, "the lone run should have ended normally, with the first token out");
        await test.RunAsync(a, b!);
        test.AssertIdle();
    }

    [Fact]
    public async Task A_prompt_beside_another_is_not_interruptible()
    {
        await using var test = new EngineUnderTest(model, options: Tight);
        using var cancellation = new CancellationTokenSource();
        var a = test.Submit(Greedy(Prompt(60, 14), 3), cancellation.Token);
        var b = test.Submit(Greedy(Prompt(60, 15), 3));
        test.Recorder.BeforeStep = () => cancellation.Cancel();
        test.Step();
        test.Recorder.BeforeStep = null;

        Assert.Equal(0, test.Engine.Snapshot.InterruptedPrefills);
        var results = await test.RunAsync(a, b);
        Assert.Equal(FinishReason.Cancelled, results[0].FinishReason);
        Assert.Equal(3, results[1].TokenIds.Count);
        test.AssertIdle();
    }
}
