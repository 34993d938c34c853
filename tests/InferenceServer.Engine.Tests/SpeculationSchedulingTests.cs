using InferenceServer.Engine.Kv;
using static InferenceServer.Engine.Tests.SchedulerParts;

namespace InferenceServer.Engine.Tests;

/// <summary>
/// The rows the scheduler plans for speculation, stepped by hand over the dense slots'
/// bookkeeping: no model, no thread. The test plays the engine's part (appending the chosen
/// tokens, <see cref="Scheduler.AcceptDrafts"/>).
/// </summary>
public sealed class SpeculationSchedulingTests(TokenizerFixture model) : IClassFixture<TokenizerFixture>
{
    private static Scheduler Create(KvLayout kv, int drafts = 3, int maxDecodes = 2) =>
        new(kv, new EngineOptions { SpeculativeDraftTokens = drafts, SpeculativeMaxDecodes = maxDecodes }, maxStepTokens: 512, reducedTopK: 0, draftTokens: drafts);

    // Its prompt computed and a first token chosen that repeats the prompt's start: "10 11 12 13 10 11 12" then 13.
    private Sequence Decoding(Scheduler scheduler, int maxTokens = 50) => Decoding(scheduler, 1, maxTokens)[0];

    private Sequence[] Decoding(Scheduler scheduler, int count, int maxTokens)
    {
        var sequences = Enumerable.Range(0, count).Select(_ => Sequence(model.Tokenizer, [10, 11, 12, 13, 10, 11, 12], maxTokens)).ToArray();
        foreach (var sequence in sequences)
            scheduler.Enqueue(sequence);
        Assert.Equal(count, scheduler.Schedule().Rows.Length);
        foreach (var sequence in sequences)
            sequence.Tokens[sequence.Length++] = 13;
        return sequences;
    }

    [Fact]
    public void A_decode_after_a_long_match_carries_the_drafts_and_wants_logits_for_each()
    {
        var scheduler = Create(Layout("dense", blocks: 64));
        var sequence = Decoding(scheduler);
        var plan = scheduler.Schedule();
        Assert.Equal([new PlanRow(sequence, 7, 0, 4, 4, Prefill: false)], plan.Rows.ToArray());
        Assert.Equal([13, 10, 11, 12], plan.Tokens.ToArray());
        // Only the newest token counts as computed until the drafts are verified.
        Assert.Equal(8, sequence.Computed);

        // Two drafts accepted, then the model's own token: the sequence decodes on from there.
        sequence.Tokens[sequence.Length++] = 10;
        sequence.Tokens[sequence.Length++] = 11;
        sequence.Tokens[sequence.Length++] = 99;
        scheduler.AcceptDrafts(sequence, 2);
        Assert.Equal(10, sequence.Computed);
        Assert.True(sequence.IsDecoding);
        scheduler.Finish(sequence);
        Assert.Equal(0, scheduler.Kv.UsedBlocks);
    }

    [Fact]
    public void After_a_short_match_one_token_is_drafted()
    {
        var scheduler = Create(Layout("dense", blocks: 64));
        var sequence = Sequence(model.Tokenizer, [10, 11, 12, 20, 21, 22], 50);
        scheduler.Enqueue(sequence);
        scheduler.Schedule();
        sequence.Tokens[sequence.Length++] = 11; // "11" occurred once before, followed by 12
        var plan = scheduler.Schedule();
        Assert.Equal([11, 12], plan.Tokens.ToArray());
        Assert.Equal(2, plan.Rows[0].LogitsCount);
        scheduler.Finish(sequence);
    }

    [Theory]
    [InlineData(2, 1)] // one token left after the next: one draft at most
    [InlineData(3, 2)]
    [InlineData(1, 0)] // the next token is the last: no draft
    public void Drafts_leave_the_next_token_room_before_max_tokens(int maxTokens, int drafts)
    {
        var scheduler = Create(Layout("dense", blocks: 64));
        var sequence = Decoding(scheduler, maxTokens: maxTokens + 1); // the first token is generated already
        var plan = scheduler.Schedule();
        Assert.Equal(drafts + 1, plan.Rows[0].TokenCount);
        Assert.Equal(drafts + 1, plan.Rows[0].LogitsCount);
        scheduler.Finish(sequence);
    }

    [Fact]
    public void Drafts_stay_short_of_the_context_end()
    {
        var scheduler = Create(Layout("dense", blocks: 64, capacity: 10));
        var sequence = Decoding(scheduler, maxTokens: 10);
        var plan = scheduler.Schedule();
        // Eight tokens in a context of ten: the newest token and one draft write positions 7 and 8.
        Assert.Equal(2, plan.Rows[0].TokenCount);
        scheduler.Finish(sequence);
    }

    [Fact]
    public void More_decoding_sequences_than_the_threshold_get_plain_decodes()
    {
        var scheduler = Create(Layout("dense", blocks: 64), maxDecodes: 1);
        var decoding = Decoding(scheduler, 2, maxTokens: 50);
        var plan = scheduler.Schedule();
        Assert.Equal(2, plan.Rows.Length);
        Assert.All(plan.Rows.ToArray(), r => Assert.Equal((1, 1), (r.TokenCount, r.LogitsCount)));
        foreach (var sequence in decoding)
            scheduler.Finish(sequence);
        Assert.Equal(0, scheduler.Kv.UsedBlocks);
    }
}
