using static InferenceServer.Engine.Tests.EngineFixture;

namespace InferenceServer.Engine.Tests;

/// <summary>The dense path's decode run spans only the slots from the first decoding one to the last.</summary>
public sealed class DecodeRunTests(EngineFixture model) : IClassFixture<EngineFixture>
{
    [Fact]
    public async Task A_sequence_decoding_alone_in_a_high_slot_runs_one_row()
    {
        await using var test = new EngineUnderTest(model, slots: 4);
        // Three prompts with nothing in common, one after another: each takes the next empty slot,
        // the earlier ones keeping their KV cached for reuse.
        await test.RunAsync(Greedy(Prompt(12, 31), 2));
        await test.RunAsync(Greedy(Prompt(12, 32), 2));
        var before = test.Recorder.Steps.Count;
        var third = await test.RunAsync(Greedy(Prompt(12, 33), 5));
        Assert.Equal(5, third.TokenIds.Count);

        var decodes = test.Recorder.Steps.Skip(before).Where(s => s.Rows.All(r => r.TokenCount == 1)).ToList();
        Assert.Equal(4, decodes.Count); // the first token comes from the prefill
        Assert.All(decodes, step =>
        {
            Assert.Equal(2, step.FirstSlot);
            Assert.Single(step.Rows);
        });
        test.AssertIdle();
    }
}
