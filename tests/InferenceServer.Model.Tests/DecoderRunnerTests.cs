using InferenceServer.Tests;

namespace InferenceServer.Model.Tests;

public sealed class DecoderRunnerTests(SmallModelFixture model) : IClassFixture<SmallModelFixture>
{
    private const float Tolerance = 1e-4f;

    private static int[] Tokens(int count, int seed) => SmallModelFixture.Tokens(count, seed);

    /// <summary>The last-position logits of a fresh prefill of the whole sequence, alone in a runner.</summary>
    private float[] PrefillAlone(ReadOnlySpan<int> tokens)
    {
        using var runner = model.CreateRunner(slots: 1);
        return runner.Step(0, [new SequenceStep(0, tokens.Length)], tokens).ToArray();
    }

    [Fact]
    public void Prefill_then_decoding_one_by_one_equals_recomputing_the_whole_sequence()
    {
        var tokens = Tokens(20, seed: 1);
        const int prompt = 12;
        using var runner = model.CreateRunner();

        runner.Step(0, [new SequenceStep(0, prompt)], tokens.AsSpan(0, prompt));
        for (var length = prompt; length < tokens.Length; length++)
        {
            var incremental = runner.Step(0, [new SequenceStep(length, 1)], tokens.AsSpan(length, 1)).ToArray();
            var recomputed = PrefillAlone(tokens.AsSpan(0, length + 1));
            Assert.InRange(Compare.MaxAbsDifference(incremental, recomputed), 0, Tolerance);
        }
    }

    [Fact]
    public void A_prompt_in_chunks_on_top_of_a_past_equals_one_prefill()
    {
        var tokens = Tokens(30, seed: 2);
        using var runner = model.CreateRunner();

        runner.Step(1, [new SequenceStep(0, 10)], tokens.AsSpan(0, 10));
        runner.Step(1, [new SequenceStep(10, 7)], tokens.AsSpan(10, 7));
        var chunked = runner.Step(1, [new SequenceStep(17, 13)], tokens.AsSpan(17, 13)).ToArray();

        Assert.InRange(Compare.MaxAbsDifference(chunked, PrefillAlone(tokens)), 0, Tolerance);
    }

    [Fact]
    public void Fresh_prompts_of_different_lengths_in_one_batch_each_get_their_own_logits()
    {
        int[][] prompts = [Tokens(5, 3), Tokens(17, 4), Tokens(1, 5), Tokens(9, 6)];
        using var runner = model.CreateRunner();

        var rows = prompts.Select(p => new SequenceStep(0, p.Length)).ToArray();
        var batched = runner.Step(0, rows, prompts.SelectMany(p => p).ToArray()).ToArray();

        var vocab = runner.VocabSize;
        for (var r = 0; r < prompts.Length; r++)
            Assert.InRange(Compare.MaxAbsDifference(batched.AsSpan(r * vocab, vocab), PrefillAlone(prompts[r])), 0, Tolerance);
    }

    [Fact]
    public void A_decode_batch_with_a_different_past_in_every_row_matches_each_sequence_alone()
    {
        int[][] sequences = [Tokens(8, 7), Tokens(3, 8), Tokens(15, 9)];
        using var runner = model.CreateRunner();

        // Prefill each slot on its own, then decode all three together for a few steps.
        var next = new int[sequences.Length];
        for (var s = 0; s < sequences.Length; s++)
        {
            var prompt = sequences[s][..^1];
            runner.Step(s, [new SequenceStep(0, prompt.Length)], prompt);
            next[s] = sequences[s][^1];
        }
        var histories = sequences.Select(s => s.ToList()).ToArray();
        var vocab = runner.VocabSize;
        for (var step = 0; step < 4; step++)
        {
            var rows = histories.Select(h => new SequenceStep(h.Count - 1, 1)).ToArray();
            var logits = runner.Step(0, rows, next).ToArray();
            for (var s = 0; s < sequences.Length; s++)
            {
                var alone = PrefillAlone(histories[s].ToArray());
                Assert.InRange(Compare.MaxAbsDifference(logits.AsSpan(s * vocab, vocab), alone), 0, Tolerance);
                next[s] = Greedy.ArgMax(logits.AsSpan(s * vocab, vocab));
                histories[s].Add(next[s]);
            }
        }
    }

    [Fact]
    public void Work_on_one_slot_leaves_the_other_slots_untouched()
    {
        var kept = Tokens(10, 10);
        using var runner = model.CreateRunner();
        runner.Step(0, [new SequenceStep(0, kept.Length - 1)], kept.AsSpan(0, kept.Length - 1));

        // Fill and decode the neighbouring slots, including a long prompt.
        runner.Step(1, [new SequenceStep(0, 40)], Tokens(40, 11));
        runner.Step(2, [new SequenceStep(0, 3)], Tokens(3, 12));
        runner.Step(1, [new SequenceStep(40, 1), new SequenceStep(3, 1)], [5, 6]);

        var logits = runner.Step(0, [new SequenceStep(kept.Length - 1, 1)], kept.AsSpan(kept.Length - 1, 1)).ToArray();
        Assert.InRange(Compare.MaxAbsDifference(logits, PrefillAlone(kept)), 0, Tolerance);
    }

    [Fact]
    public void Steady_state_decode_steps_allocate_no_managed_memory()
    {
        using var runner = model.CreateRunner();
        var prompt = Tokens(6, 13);
        for (var s = 0; s < 4; s++)
            runner.Step(s, [new SequenceStep(0, prompt.Length)], prompt);
        SequenceStep[] rows = new SequenceStep[4];
        int[] next = [7, 8, 9, 10];
        void Decode(int length)
        {
            for (var s = 0; s < rows.Length; s++)
                rows[s] = new SequenceStep(length, 1);
            runner.Step(0, rows, next);
        }
        Decode(prompt.Length); // the first decode step of a batch size creates its binding

        var before = GC.GetAllocatedBytesForCurrentThread();
        for (var length = prompt.Length + 1; length < prompt.Length + 21; length++)
            Decode(length);
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        Assert.Equal(0, allocated);
    }

    [Fact]
    public void Greedy_generation_is_deterministic_and_stops_at_the_limit()
    {
        using var runner = model.CreateRunner(slots: 1);
        var prompt = Tokens(5, 14);
        var first = Greedy.Generate(runner, prompt, 10, []);
        var second = Greedy.Generate(runner, prompt, 10, []);
        Assert.Equal(10, first.Length);
        Assert.Equal(first, second);

        // Stopping at a token: the first generated token is a stop id, so generation ends there.
        var stopped = Greedy.Generate(runner, prompt, 10, [first[0]]);
        Assert.Equal([first[0]], stopped);
    }

    [Fact]
    public void Invalid_steps_are_rejected_with_a_message_that_names_the_problem()
    {
        using var runner = model.CreateRunner(slots: 2, capacity: 16);
        var outsideVocabulary = Assert.Throws<ArgumentOutOfRangeException>(() => runner.Step(0, [new SequenceStep(0, 1)], [999]));
        Assert.Contains("outside the vocabulary", outsideVocabulary.Message, StringComparison.Ordinal);

        var tooLong = Assert.Throws<ArgumentException>(() => runner.Step(0, [new SequenceStep(10, 7)], new int[7]));
        Assert.Contains("a slot holds 16", tooLong.Message, StringComparison.Ordinal);

        var outsideSlots = Assert.Throws<ArgumentOutOfRangeException>(() => runner.Step(1, [new SequenceStep(0, 1), new SequenceStep(0, 1)], [3, 4]));
        Assert.Contains("outside the 2 KV slots", outsideSlots.Message, StringComparison.Ordinal);

        var mismatch = Assert.Throws<ArgumentException>(() => runner.Step(0, [new SequenceStep(0, 3)], [3, 4]));
        Assert.Contains("3 new tokens but 2", mismatch.Message, StringComparison.Ordinal);

        var continuation = Assert.Throws<ArgumentException>(() => runner.Step(0, [new SequenceStep(2, 2), new SequenceStep(0, 2)], [3, 4, 5, 6]));
        Assert.Contains("one at a time", continuation.Message, StringComparison.Ordinal);

        Assert.Throws<ArgumentException>(() => runner.Step(0, [], []));
        Assert.Throws<ArgumentException>(() => runner.Step(0, [new SequenceStep(0, 0)], []));

        // The runner still works after rejected steps.
        Assert.Equal(runner.VocabSize, runner.Step(0, [new SequenceStep(0, 2)], [3, 4]).Length);
    }

    [Fact]
    public void The_kv_buffers_are_sized_from_the_options()
    {
        using var runner = model.CreateRunner(slots: 3, capacity: 32);
        var c = SmallModelFixture.Config;
        long expected = 2L * c.NumHiddenLayers * 3 * c.NumKeyValueHeads * 32 * c.HeadDim * sizeof(float);
        Assert.Equal(expected, runner.KvCacheBytes);
        Assert.Equal(3, runner.Slots);
        Assert.Equal(32, runner.Capacity);
    }
}

/// <summary>
/// Interruption: another thread may end a step while the runner allows it; the step throws, and
/// the runner's next steps are what they would have been without it.
/// </summary>
public sealed class DecoderRunnerInterruptionTests(SmallModelFixture model) : IClassFixture<SmallModelFixture>
{
    [Fact]
    public void An_interruption_asked_for_before_a_step_ends_it_and_is_then_forgotten()
    {
        var tokens = SmallModelFixture.Tokens(40, seed: 21);
        using var reference = model.CreateRunner(slots: 1);
        var expected = reference.Step(0, [new SequenceStep(0, 40)], tokens).ToArray();
        using var runner = model.CreateRunner(slots: 1);

        runner.Interrupt(); // not allowed: nothing happens
        Assert.Equal(expected, runner.Step(0, [new SequenceStep(0, 40)], tokens).ToArray());

        runner.AllowInterrupt(true);
        runner.Interrupt();
        Assert.Throws<StepInterruptedException>(() => runner.Step(0, [new SequenceStep(0, 40)], tokens));
        // Acted on once: the next step runs.
        Assert.Equal(expected, runner.Step(0, [new SequenceStep(0, 40)], tokens).ToArray());

        runner.Interrupt();
        runner.AllowInterrupt(false); // forgets the interruption not yet acted on
        Assert.Equal(expected, runner.Step(0, [new SequenceStep(0, 40)], tokens).ToArray());
    }

    [Fact]
    public async Task Interruptions_racing_steps_from_another_thread_leave_each_step_whole_or_ended_and_the_runner_as_it_was()
    {
        var tokens = SmallModelFixture.Tokens(120, seed: 22);
        using var reference = model.CreateRunner(slots: 1, capacity: 128);
        var expected = reference.Step(0, [new SequenceStep(0, 120)], tokens).ToArray();
        using var runner = model.CreateRunner(slots: 1, capacity: 128);
        runner.AllowInterrupt(true);

        for (var attempt = 0; attempt < 5; attempt++)
        {
            // Asked for as the step starts: before it (ended at once), while ONNX Runtime runs it
            // (its terminate flag) or after it (dropped); which one is up to the threads, so each
            // step must either end early or give the whole, right logits.
            using var started = new ManualResetEventSlim();
            var interrupter = Task.Run(() =>
            {
                started.Wait();
                runner.Interrupt();
            });
            started.Set();
            try
            {
                Assert.Equal(expected, runner.Step(0, [new SequenceStep(0, 120)], tokens).ToArray());
            }
            catch (StepInterruptedException)
            {
                // Ended early: nothing to compare.
            }
            await interrupter;
            runner.AllowInterrupt(false); // an interruption that came after the step is dropped
            runner.AllowInterrupt(true);
        }
        runner.AllowInterrupt(false);

        // A step after interrupted ones computes as a fresh runner does (the terminate flag is cleared).
        Assert.Equal(expected, runner.Step(0, [new SequenceStep(0, 120)], tokens).ToArray());
    }
}
