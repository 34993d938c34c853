using InferenceServer.Engine.Kv;
using InferenceServer.Engine.Sampling;
using static InferenceServer.Engine.Tests.SchedulerParts;

namespace InferenceServer.Engine.Tests;

/// <summary>
/// The scheduler alone, stepped by hand over each KV layout's bookkeeping: no model, no thread, no
/// clock. Each test plays the engine's part with <see cref="SchedulerParts.Apply"/>.
/// </summary>
public sealed class SchedulerTests(TokenizerFixture model) : IClassFixture<TokenizerFixture>
{
    public static TheoryData<string> Layouts => ["dense", "paged"];

    private Sequence New(int length, int seed, int maxTokens = 50, int priority = 0, SamplingParameters? sampling = null) =>
        Sequence(model.Tokenizer, EngineFixture.Prompt(length, seed), maxTokens, priority, sampling);

    private static Scheduler Create(KvLayout kv, EngineOptions? options = null, int reducedTopK = 0) =>
        new(kv, options ?? new EngineOptions(), maxStepTokens: 512, reducedTopK);

    [Theory]
    [MemberData(nameof(Layouts))]
    public void Decodes_come_first_and_a_long_prompt_is_chunked_around_them(string layout)
    {
        var scheduler = Create(Layout(layout, blocks: 64), new EngineOptions { PrefillChunkTokens = 16, MaxBatchTokens = 20 });
        var decoding = New(4, 1, maxTokens: 100);
        scheduler.Enqueue(decoding);
        var first = scheduler.Schedule();
        Assert.Equal([new PlanRow(decoding, 0, 0, 4, 1, Prefill: true)], first.Rows.ToArray());
        Apply(scheduler, first);

        var prompt = New(200, 2, maxTokens: 2);
        scheduler.Enqueue(prompt);
        var chunks = new List<PlanRow>();
        while (prompt.Computed < 200)
        {
            var plan = scheduler.Schedule();
            Assert.Same(first, plan); // one plan, reused
            // Every iteration: the decode first, then a chunk of the prompt within the token budget.
            Assert.Equal(2, plan.Rows.Length);
            Assert.Equal((decoding, 1, 1), (plan.Rows[0].Sequence, plan.Rows[0].TokenCount, plan.Rows[0].LogitsCount));
            Assert.False(plan.Rows[0].Prefill);
            Assert.Same(prompt, plan.Rows[1].Sequence);
            Assert.True(plan.TokenCount <= 20);
            Assert.Equal(prompt.Tokens.AsSpan(plan.Rows[1].PastLength, plan.Rows[1].TokenCount), plan.Tokens.Slice(plan.Rows[1].TokenOffset, plan.Rows[1].TokenCount));
            chunks.Add(plan.Rows[1]);
            Apply(scheduler, plan);
        }
        Assert.Equal(13, chunks.Count);
        Assert.All(chunks, c => Assert.InRange(c.TokenCount, 1, 16));
        Assert.Equal(200, chunks.Sum(c => c.TokenCount));
        Assert.Equal(Enumerable.Range(0, 13).Select(i => i * 16), chunks.Select(c => c.PastLength));
        // Only the last chunk ends at the prompt's end, so only its logits are wanted.
        Assert.Equal([.. Enumerable.Repeat(0, 12), 1], chunks.Select(c => c.LogitsCount));
        Assert.Equal(1, prompt.Generated);
    }

    [Theory]
    [MemberData(nameof(Layouts))]
    public void Higher_priority_is_admitted_first_and_equal_priorities_in_arrival_order(string layout)
    {
        var scheduler = Create(Layout(layout, blocks: 64, sequences: 1));
        var busy = New(5, 10, maxTokens: 2);
        scheduler.Enqueue(busy);
        Apply(scheduler, scheduler.Schedule());
        Sequence first = New(5, 11, maxTokens: 1), second = New(5, 12, maxTokens: 1), urgent = New(5, 13, maxTokens: 1, priority: 5);
        scheduler.Enqueue(first);
        scheduler.Enqueue(second);
        scheduler.Enqueue(urgent);

        var admitted = new List<Sequence>();
        for (var i = 0; i < 20 && !scheduler.IsIdle; i++)
        {
            var plan = scheduler.Schedule();
            Assert.True(scheduler.Running.Count <= 1);
            admitted.AddRange(plan.Admitted);
            Apply(scheduler, plan);
        }
        Assert.Equal([urgent, first, second], admitted);
    }

    [Theory]
    [MemberData(nameof(Layouts))]
    public void When_kv_runs_out_the_newest_is_preempted_and_the_others_keep_their_rows(string layout)
    {
        // Six blocks: three sequences of 17 tokens take two each; the oldest needs a third at 32 tokens.
        var scheduler = Create(Layout(layout, blocks: 6));
        Sequence oldest = New(17, 20, maxTokens: 30), middle = New(17, 21, maxTokens: 30), newest = New(17, 22, maxTokens: 30);
        foreach (var sequence in new[] { oldest, middle, newest })
            scheduler.Enqueue(sequence);
        IterationPlan plan;
        do
        {
            plan = scheduler.Schedule();
            Apply(scheduler, plan);
        }
        while (plan.Preempted.Count == 0 && !scheduler.IsIdle);

        Assert.Equal([newest], plan.Preempted);
        Assert.Equal(0, newest.Computed);
        Assert.Equal(1, newest.Preemptions);
        Assert.Equal(1, scheduler.WaitingCount);
        Assert.Equal([oldest, middle], scheduler.Running);
        // Both survivors still decode in the iteration that preempted (the running list shrank under it).
        Assert.Equal([oldest, middle], plan.Rows.ToArray().Select(r => r.Sequence));

        // The preempted sequence comes back and recomputes what it had, prompt and generated tokens.
        var generated = newest.Generated;
        for (var i = 0; i < 200 && !scheduler.IsIdle; i++)
        {
            plan = scheduler.Schedule();
            if (plan.Admitted.Count == 0 && plan.Rows.ToArray().FirstOrDefault(r => r.Sequence == newest) is { Sequence: not null } row && row.Prefill)
                Assert.True(row.PastLength + row.TokenCount <= 17 + generated);
            Apply(scheduler, plan);
        }
        Assert.True(scheduler.IsIdle);
        Assert.Equal(30, newest.Generated);
        Assert.Equal(0, scheduler.Kv.UsedBlocks);
    }

    [Theory]
    [MemberData(nameof(Layouts))]
    public void Cancelled_sequences_leave_at_the_next_plan_and_their_kv_stays_cached(string layout)
    {
        var scheduler = Create(Layout(layout, blocks: 64, sequences: 1));
        Sequence running = New(40, 30), waiting = New(8, 31);
        scheduler.Enqueue(running);
        Apply(scheduler, scheduler.Schedule());
        scheduler.Enqueue(waiting);
        Apply(scheduler, scheduler.Schedule());
        Assert.Equal(1, scheduler.WaitingCount);

        running.Output.Abandon();
        waiting.Output.Abandon();
        var plan = scheduler.Schedule();
        Assert.Equal([running], plan.DroppedRunning);
        Assert.Equal([waiting], plan.DroppedWaiting);
        Assert.Empty(plan.Rows.ToArray());
        Assert.True(scheduler.IsIdle);
        Assert.Equal(0, scheduler.Kv.UsedBlocks);
        Assert.True(scheduler.Kv.CachedBlocks > 0, "the cancelled sequence's KV should stay cached for reuse");
    }

    [Theory]
    [MemberData(nameof(Layouts))]
    public void A_prompt_sharing_a_finished_prefix_starts_after_it(string layout)
    {
        var scheduler = Create(Layout(layout, blocks: 64));
        var first = New(40, 40, maxTokens: 1);
        scheduler.Enqueue(first);
        Apply(scheduler, scheduler.Schedule());
        Assert.True(scheduler.IsIdle);

        var second = Sequence(model.Tokenizer, [.. first.Tokens.AsSpan(0, 40), 5, 6, 7], maxTokens: 1);
        scheduler.Enqueue(second);
        var plan = scheduler.Schedule();
        // Dense slots keep every token computed; paged blocks are shared whole (two of 16).
        var reused = layout == "dense" ? 40 : 32;
        Assert.Equal(reused, second.CachedPromptTokens);
        Assert.Equal([second], plan.Admitted);
        Assert.Equal([new PlanRow(second, reused, 0, 43 - reused, 1, Prefill: true)], plan.Rows.ToArray());
        Assert.Empty(plan.Copies); // a cached slot is taken over, not copied
    }

    [Theory]
    [MemberData(nameof(Layouts))]
    public void A_cached_prefix_is_reused_only_by_sequences_of_the_same_adapter(string layout)
    {
        var scheduler = Create(Layout(layout, blocks: 64));
        var first = Sequence(model.Tokenizer, EngineFixture.Prompt(40, 70), maxTokens: 1, adapter: 1);
        scheduler.Enqueue(first);
        Apply(scheduler, scheduler.Schedule());
        Assert.True(scheduler.IsIdle);
        int[] prompt = [.. first.Tokens.AsSpan(0, 40), 5, 6, 7];

        // The same tokens with another adapter, or with none: KV computed with adapter 1 is not theirs.
        foreach (var adapter in new[] { 2, 0 })
        {
            var other = Sequence(model.Tokenizer, prompt, maxTokens: 1, adapter: adapter);
            scheduler.Enqueue(other);
            var plan = scheduler.Schedule();
            Assert.Equal(0, other.CachedPromptTokens);
            Assert.Empty(plan.Copies);
            Assert.Equal(new PlanRow(other, 0, 0, 43, 1, Prefill: true), plan.Rows[0]);
            Apply(scheduler, plan);
        }

        var same = Sequence(model.Tokenizer, prompt, maxTokens: 1, adapter: 1);
        scheduler.Enqueue(same);
        scheduler.Schedule();
        Assert.Equal(layout == "dense" ? 40 : 32, same.CachedPromptTokens);
    }

    [Fact]
    public void A_running_slot_of_another_adapter_is_not_copied_from()
    {
        var scheduler = Create(Layout("dense", blocks: 64));
        var running = Sequence(model.Tokenizer, EngineFixture.Prompt(64, 71), maxTokens: 20, adapter: 2);
        scheduler.Enqueue(running);
        Apply(scheduler, scheduler.Schedule());

        var other = Sequence(model.Tokenizer, [.. running.Tokens.AsSpan(0, 64), 9, 10, 11], maxTokens: 2, adapter: 1);
        scheduler.Enqueue(other);
        var plan = scheduler.Schedule();
        Assert.Empty(plan.Copies);
        Assert.Equal(0, other.CachedPromptTokens);
    }

    [Fact]
    public void A_prompt_sharing_a_running_slots_prefix_gets_it_copied_before_the_runs()
    {
        var scheduler = Create(Layout("dense", blocks: 64));
        var running = New(64, 50, maxTokens: 20);
        scheduler.Enqueue(running);
        Apply(scheduler, scheduler.Schedule());

        var sharing = Sequence(model.Tokenizer, [.. running.Tokens.AsSpan(0, 64), 9, 10, 11], maxTokens: 2);
        scheduler.Enqueue(sharing);
        var plan = scheduler.Schedule();
        Assert.Equal([new KvCopy(running.KvIndex, sharing.KvIndex, 64)], plan.Copies);
        Assert.Equal(64, sharing.CachedPromptTokens);
        Assert.Contains(new PlanRow(sharing, 64, 1, 3, 1, Prefill: true), plan.Rows.ToArray());
    }

    [Fact]
    public void Whole_logits_rows_are_asked_for_only_when_a_sampled_row_needs_more_than_the_reductions()
    {
        var scheduler = Create(Layout("paged", blocks: 64), reducedTopK: 8);
        var greedy = New(10, 60);
        scheduler.Enqueue(greedy);
        Assert.False(scheduler.Schedule().NeedsLogitsRows);

        var penalized = New(10, 61, sampling: new SamplingParameters { Temperature = 0.9, RepetitionPenalty = 1.2, Seed = 1 });
        scheduler.Enqueue(penalized);
        var plan = scheduler.Schedule();
        Assert.True(plan.NeedsLogitsRows);
        Assert.True(penalized.NeedsLogitsRow(8));
        Assert.False(greedy.NeedsLogitsRow(8));
        Assert.True(greedy.NeedsLogitsRow(0)); // an executor that does not reduce returns whole rows
    }

    [Theory]
    [MemberData(nameof(Layouts))]
    public void Planned_in_halves_the_prefills_leave_room_for_the_decodes_and_a_finished_prompt_decodes_at_once(string layout)
    {
        var scheduler = Create(Layout(layout, blocks: 64), new EngineOptions { PrefillChunkTokens = 16, MaxBatchTokens = 16 });
        var decoding = New(4, 70, maxTokens: 10);
        scheduler.Enqueue(decoding);
        Apply(scheduler, scheduler.Schedule());
        var prompt = New(30, 71, maxTokens: 10);
        scheduler.Enqueue(prompt);

        // 16 tokens an iteration, one of them the decode's: a chunk of 15.
        var prefills = scheduler.Schedule(PlanPart.Prefills);
        Assert.Equal([new PlanRow(prompt, 0, 0, 15, 0, Prefill: true)], prefills.Rows.ToArray());
        Apply(scheduler, prefills);
        var decodes = scheduler.Schedule(PlanPart.Decodes);
        Assert.Equal([new PlanRow(decoding, 4, 0, 1, 1, Prefill: false)], decodes.Rows.ToArray());
        Apply(scheduler, decodes);

        // The rest of the prompt, then its first decode in the same iteration's second half.
        prefills = scheduler.Schedule(PlanPart.Prefills);
        Assert.Equal([new PlanRow(prompt, 15, 0, 15, 1, Prefill: true)], prefills.Rows.ToArray());
        Apply(scheduler, prefills);
        decodes = scheduler.Schedule(PlanPart.Decodes);
        Assert.Equal([decoding, prompt], decodes.Rows.ToArray().Select(r => r.Sequence));
        Assert.All(decodes.Rows.ToArray(), r => Assert.Equal((1, 1, false), (r.TokenCount, r.LogitsCount, r.Prefill)));
    }
}
