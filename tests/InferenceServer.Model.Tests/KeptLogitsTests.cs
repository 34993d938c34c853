using InferenceServer.ModelBuilder;
using InferenceServer.Tests;

namespace InferenceServer.Model.Tests;

/// <summary>
/// <see cref="DecoderRunner.StepKeepingLogits"/>: one row's step that returns the logits of its
/// last several positions must give, at each of them, what running the tokens one at a time
/// gives at that position. The tolerance is that of the runner's other equivalence checks: the
/// multi-token attention sums in another order than the one-token steps.
/// </summary>
public sealed class KeptLogitsTests(SmallModelFixture model) : IClassFixture<SmallModelFixture>
{
    private const float Tolerance = 1e-4f;

    private static int[] Tokens(int count, int seed) => SmallModelFixture.Tokens(count, seed);

    /// <summary>The logits after each of tokens[prompt..], decoding them one at a time after a prefill of the first prompt tokens.</summary>
    private float[][] OneAtATime(int[] tokens, int prompt)
    {
        using var runner = model.CreateRunner(slots: 1);
        var rows = new List<float[]> { runner.Step(0, [new SequenceStep(0, prompt)], tokens.AsSpan(0, prompt)).ToArray() };
        for (var length = prompt; length < tokens.Length; length++)
            rows.Add(runner.Step(0, [new SequenceStep(length, 1)], tokens.AsSpan(length, 1)).ToArray());
        return [.. rows];
    }

    [Fact]
    public void A_verification_step_on_a_past_gives_each_position_the_logits_of_one_token_steps()
    {
        var tokens = Tokens(17, seed: 21);
        const int past = 12;
        var expected = OneAtATime(tokens, past - 1); // expected[i]: after the first past - 1 + i + 1 tokens
        using var runner = model.CreateRunner();
        Assert.True(runner.HasMultiPositionLogits);

        runner.Step(2, [new SequenceStep(0, past)], tokens.AsSpan(0, past));
        var count = tokens.Length - past;
        var logits = runner.StepKeepingLogits(2, new SequenceStep(past, count), tokens.AsSpan(past), count).ToArray();

        var vocab = runner.VocabSize;
        Assert.Equal(count * vocab, logits.Length);
        for (var i = 0; i < count; i++)
            Assert.InRange(Compare.MaxAbsDifference(logits.AsSpan(i * vocab, vocab), expected[i + 2]), 0, Tolerance);
    }

    [Fact]
    public void Fewer_kept_positions_are_the_last_ones_and_one_equals_a_plain_step()
    {
        var tokens = Tokens(14, seed: 22);
        const int past = 8;
        using var runner = model.CreateRunner();
        using var reference = model.CreateRunner();
        var vocab = runner.VocabSize;
        runner.Step(0, [new SequenceStep(0, past)], tokens.AsSpan(0, past));
        var all = runner.StepKeepingLogits(0, new SequenceStep(past, 6), tokens.AsSpan(past), 6).ToArray();

        // The same step again (the KV it writes is the same): the last two positions only.
        var lastTwo = runner.StepKeepingLogits(0, new SequenceStep(past, 6), tokens.AsSpan(past), 2).ToArray();
        Assert.InRange(Compare.MaxAbsDifference(lastTwo, all.AsSpan(4 * vocab)), 0, Tolerance);

        var lastOne = runner.StepKeepingLogits(0, new SequenceStep(past, 6), tokens.AsSpan(past), 1).ToArray();
        reference.Step(0, [new SequenceStep(0, past)], tokens.AsSpan(0, past));
        var plain = reference.Step(0, [new SequenceStep(past, 6)], tokens.AsSpan(past)).ToArray();
        Assert.InRange(Compare.MaxAbsDifference(lastOne, plain), 0, Tolerance);
        Assert.InRange(Compare.MaxAbsDifference(lastOne, all.AsSpan(5 * vocab)), 0, Tolerance);
    }

    [Fact]
    public void Rejected_drafts_left_in_the_slot_do_not_change_the_next_steps()
    {
        // A verification writes KV for every drafted token; when only some are accepted, the
        // next step starts at the accepted length and must not see the rest.
        var accepted = Tokens(16, seed: 23);
        const int past = 10;
        var expected = OneAtATime(accepted, past);
        using var runner = model.CreateRunner();
        var vocab = runner.VocabSize;
        runner.Step(3, [new SequenceStep(0, past)], accepted.AsSpan(0, past));

        // The last token and four drafts of which the first two are right.
        int[] check = [accepted[past], accepted[past + 1], accepted[past + 2], 5, 6];
        var logits = runner.StepKeepingLogits(3, new SequenceStep(past, check.Length), check, check.Length).ToArray();
        for (var i = 0; i < 3; i++)
            Assert.InRange(Compare.MaxAbsDifference(logits.AsSpan(i * vocab, vocab), expected[i + 1]), 0, Tolerance);

        // Carry on from the accepted length: the model's token, then one more draft.
        var length = past + 3;
        var next = runner.StepKeepingLogits(3, new SequenceStep(length, 2), accepted.AsSpan(length, 2), 2).ToArray();
        Assert.InRange(Compare.MaxAbsDifference(next.AsSpan(0, vocab), expected[4]), 0, Tolerance);
        Assert.InRange(Compare.MaxAbsDifference(next.AsSpan(vocab, vocab), expected[5]), 0, Tolerance);
        var decoded = runner.Step(3, [new SequenceStep(length + 2, 1)], accepted.AsSpan(length + 2, 1)).ToArray();
        Assert.InRange(Compare.MaxAbsDifference(decoded, expected[6]), 0, Tolerance);
    }

    /// <summary>
    /// The graph declares its logits with one position (onnxruntime-genai sizes its buffer from
    /// that), so ONNX Runtime allocates the logits of a step that keeps several and the runner
    /// copies them out: what is left on the managed heap is ONNX Runtime's handles to its outputs,
    /// a few hundred bytes a step, the same every step.
    /// </summary>
    [Fact]
    public void Repeated_verification_steps_allocate_only_the_output_handles()
    {
        var tokens = Tokens(40, seed: 24);
        using var runner = model.CreateRunner();
        runner.Step(1, [new SequenceStep(0, 10)], tokens.AsSpan(0, 10));
        void Verify(int past) => runner.StepKeepingLogits(1, new SequenceStep(past, 5), tokens.AsSpan(past, 5), 5);
        Verify(10); // the first run of a shape creates its binding
        Verify(12);
        var before = GC.GetAllocatedBytesForCurrentThread();
        Verify(14);
        var first = GC.GetAllocatedBytesForCurrentThread() - before;
        before = GC.GetAllocatedBytesForCurrentThread();
        for (var past = 17; past < 32; past += 3)
            Verify(past);
        var five = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.InRange(first, 1, 1024);
        Assert.Equal(5 * first, five);
    }

    [Fact]
    public void Bad_arguments_are_refused_with_a_reason()
    {
        using var runner = model.CreateRunner(slots: 2, capacity: 32);
        var tokens = Tokens(4, seed: 25);
        var tooMany = Assert.Throws<ArgumentOutOfRangeException>(() => runner.StepKeepingLogits(0, new SequenceStep(0, 4), tokens, 5));
        Assert.Contains("1 to 4", tooMany.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentOutOfRangeException>(() => runner.StepKeepingLogits(0, new SequenceStep(0, 4), tokens, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => runner.StepKeepingLogits(2, new SequenceStep(0, 4), tokens, 1));
        Assert.Throws<ArgumentException>(() => runner.StepKeepingLogits(0, new SequenceStep(30, 4), tokens, 1));
        Assert.Throws<ArgumentException>(() => runner.StepKeepingLogits(0, new SequenceStep(0, 3), tokens, 1));
    }

    [Fact]
    public void A_graph_without_the_input_reports_no_multi_position_logits()
    {
        // A graph that returns every position (as onnxruntime-genai's builder writes them) has no
        // logits_to_keep: the runner says so, and refuses the step rather than return wrong rows.
        using var temp = new TempFolder();
        var path = temp.Combine("all");
        using (var weights = new ModelBuilder.Checkpoint.RandomWeights(seed: 7, standardDeviation: 0.1f))
            DecoderModelBuilder.Build(SmallModelFixture.Config, weights, path, new BuildOptions { LogitsForAllPositions = true }, tokenizerFolder: null);
        using var runner = new DecoderRunner(ModelFolder.Load(path), new RunnerOptions { MaxBatch = 1, MaxSequenceLength = 32, IntraOpThreads = 1 });
        Assert.False(runner.HasMultiPositionLogits);
        IDecoderModel decoder = runner;
        Assert.False(decoder.HasMultiPositionLogits);
        var error = Assert.Throws<InvalidOperationException>(() => runner.StepKeepingLogits(0, new SequenceStep(0, 3), [4, 5, 6], 3));
        Assert.Contains(DecoderRunner.LogitsToKeepInput, error.Message, StringComparison.Ordinal);
    }
}
