using System.Diagnostics.Metrics;
using InferenceServer.Engine.Sampling;
using InferenceServer.Model;
using static InferenceServer.Engine.Tests.EngineFixture;

namespace InferenceServer.Engine.Tests;

/// <summary>
/// Prompt-lookup speculation through the real engine on the small float32 model (its graph keeps
/// several positions' logits): the tokens are those plain decoding gives, greedy and seeded, with
/// drafts accepted; stops, max_tokens and cancellation act in the middle of a draft; the KV cache
/// is empty after.
/// </summary>
public sealed class SpeculationTests(EngineFixture model) : IClassFixture<EngineFixture>
{
    private static readonly EngineOptions Speculating = new() { SpeculativeDraftTokens = 3 };

    /// <summary>Prompts that repeat a stretch of tokens, as code repeats itself: drafts find matches.</summary>
    private static int[] Repeating(int period, int repeats, int seed)
    {
        var stretch = Prompt(period, seed);
        return [.. Enumerable.Repeat(stretch, repeats).SelectMany(t => t), .. stretch.Take(period / 2)];
    }

    private static IEnumerable<GenerationRequest> Corpus() =>
        Enumerable.Range(0, 6).Select(i => Greedy(Repeating(6 + i, 3 + i % 2, seed: 100 + i), maxTokens: 24 + 4 * i));

    private async Task<GenerationResult> RunAsync(EngineOptions? options, GenerationRequest request)
    {
        await using var test = new EngineUnderTest(model, slots: 2, options: options);
        var result = await test.RunAsync(request);
        test.AssertIdle();
        return result;
    }

    /// <summary>The engine's speculation counters, this engine's only.</summary>
    private sealed class SpeculationCounts : IDisposable
    {
        private readonly MeterListener _listener = new();
        private long _drafted, _accepted;

        public SpeculationCounts(InferenceEngine engine)
        {
            _listener.InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter == engine.Meter && instrument.Name.StartsWith("inference.speculation.", StringComparison.Ordinal))
                    l.EnableMeasurementEvents(instrument);
            };
            _listener.SetMeasurementEventCallback<long>((instrument, value, _, _) =>
            {
                if (instrument.Name.EndsWith("draft_tokens", StringComparison.Ordinal))
                    Interlocked.Add(ref _drafted, value);
                else
                    Interlocked.Add(ref _accepted, value);
            });
            _listener.Start();
        }

        public long Drafted => Interlocked.Read(ref _drafted);
        public long Accepted => Interlocked.Read(ref _accepted);

        public void Dispose() => _listener.Dispose();
    }

    [Fact]
    public async Task Greedy_output_is_plain_greedy_output_with_drafts_accepted()
    {
        await using var test = new EngineUnderTest(model, slots: 2, options: Speculating);
        using var counts = new SpeculationCounts(test.Engine);
        Assert.Equal(3, test.Engine.SpeculativeDraftTokens);
        foreach (var request in Corpus())
        {
            var plain = await RunAsync(null, request);
            var speculated = await test.RunAsync(request);
            Assert.Equal(plain.TokenIds, speculated.TokenIds);
            Assert.Equal(plain.Text, speculated.Text);
            Assert.Equal(FinishReason.Length, speculated.FinishReason);
            Assert.Equal(request.MaxTokens, speculated.Usage.CompletionTokens);
            test.AssertIdle();
        }
        Assert.True(test.Recorder.KeptLogitsSteps > 0, "no step checked drafts");
        Assert.True(counts.Accepted > 0, $"no draft was accepted of {counts.Drafted}");
        Assert.True(counts.Accepted <= counts.Drafted);
    }

    [Fact]
    public async Task Two_sequences_speculating_together_get_their_plain_tokens()
    {
        var requests = Corpus().Take(2).ToArray();
        var expected = new List<IReadOnlyList<int>>();
        foreach (var request in requests)
            expected.Add((await RunAsync(null, request)).TokenIds);

        await using var test = new EngineUnderTest(model, slots: 4, options: Speculating);
        var results = await test.RunAsync([.. requests.Select(r => test.Submit(r))]);
        Assert.Equal(expected[0], results[0].TokenIds);
        Assert.Equal(expected[1], results[1].TokenIds);
        Assert.True(test.Recorder.KeptLogitsSteps > 0);
        test.AssertIdle();
    }

    [Fact]
    public async Task More_decoding_sequences_than_the_threshold_draft_nothing()
    {
        await using var test = new EngineUnderTest(model, slots: 4, options: Speculating with { SpeculativeMaxDecodes = 2 });
        var outputs = Corpus().Take(3).Select(r => test.Submit(r with { MaxTokens = 20 })).ToArray();
        test.Step(); // the three prompts, then their first decode together
        for (var i = 0; i < 10; i++)
            test.Step();
        Assert.Equal(0, test.Recorder.KeptLogitsSteps);
        await test.RunAsync(outputs);
        test.AssertIdle();
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(5)]
    public async Task Max_tokens_ends_a_draft_at_the_limit(int maxTokens)
    {
        var request = Corpus().First() with { MaxTokens = maxTokens };
        var plain = await RunAsync(null, request);
        var speculated = await RunAsync(Speculating, request);
        Assert.Equal(plain.TokenIds, speculated.TokenIds);
        Assert.Equal(maxTokens, speculated.TokenIds.Count);
    }

    [Fact]
    public async Task A_stop_id_inside_accepted_drafts_ends_the_output_there()
    {
        var request = Corpus().Skip(1).First();
        var plain = await RunAsync(null, request);
        // A token late in the output, where drafts are being accepted; it ends the output at its first occurrence.
        var stopId = plain.TokenIds[^3];
        var stopAt = plain.TokenIds.ToList().IndexOf(stopId);
        var speculated = await RunAsync(Speculating, request with { StopTokenIds = [stopId] });
        Assert.Equal(FinishReason.Stop, speculated.FinishReason);
        Assert.Equal(plain.TokenIds.Take(stopAt + 1), speculated.TokenIds);
    }

    [Fact]
    public async Task A_stop_string_inside_accepted_drafts_ends_the_text_there()
    {
        var request = Corpus().Skip(2).First();
        var plain = await RunAsync(null, request);
        var stop = plain.Text.Length >= 8 ? plain.Text.Substring(plain.Text.Length - 6, 3) : plain.Text;
        var expected = await RunAsync(null, request with { StopStrings = [stop] });
        var speculated = await RunAsync(Speculating, request with { StopStrings = [stop] });
        Assert.Equal(expected.Text, speculated.Text);
        Assert.Equal(expected.FinishReason, speculated.FinishReason);
        Assert.Equal(expected.TokenIds, speculated.TokenIds);
    }

    [Fact]
    public async Task Seeded_sampling_draws_the_tokens_plain_decoding_draws()
    {
        foreach (var request in Corpus().Take(3))
        {
            var seeded = request with { Sampling = new SamplingParameters { Temperature = 0.7, TopP = 0.9, Seed = 4321 } };
            var plain = await RunAsync(null, seeded);
            var speculated = await RunAsync(Speculating, seeded);
            Assert.Equal(plain.TokenIds, speculated.TokenIds);
        }
    }

    [Fact]
    public async Task Cancelling_while_drafts_are_checked_frees_the_kv()
    {
        await using var test = new EngineUnderTest(model, slots: 2, options: Speculating);
        using var cancel = new CancellationTokenSource();
        var request = Corpus().Last();
        var output = test.Submit(request, cancel.Token);
        for (var i = 0; i < 100 && test.Recorder.KeptLogitsSteps == 0; i++)
            test.Step();
        Assert.True(test.Recorder.KeptLogitsSteps > 0, "no step checked drafts");
        await cancel.CancelAsync();
        test.Step();
        var result = await output.CollectAsync();
        Assert.Equal(FinishReason.Cancelled, result.FinishReason);
        test.AssertIdle();

        // The slot's cached KV covers accepted tokens only: the same request again reuses it and
        // still gets the plain tokens.
        var plain = await RunAsync(null, request);
        Assert.Equal(plain.TokenIds, (await test.RunAsync(request)).TokenIds);
        test.AssertIdle();
    }

    [Fact]
    public async Task Logprobs_of_speculated_tokens_are_those_of_plain_decoding()
    {
        var request = Corpus().First() with { Sampling = new SamplingParameters { Temperature = 0, Logprobs = 2 } };
        var plain = await RunAsync(null, request);
        var speculated = await RunAsync(Speculating, request);
        Assert.Equal(plain.TokenIds, speculated.TokenIds);
        Assert.Equal(plain.Logprobs!.Count, speculated.Logprobs!.Count);
        for (var i = 0; i < plain.Logprobs.Count; i++)
            Assert.Equal(plain.Logprobs[i].Logprob, speculated.Logprobs[i].Logprob, 3);
    }

    [Fact]
    public async Task The_paged_path_does_not_speculate()
    {
        await using var test = new EngineUnderTest(model, new ReferencePagedModel(model.Folder, 64), Speculating);
        Assert.Equal(0, test.Engine.SpeculativeDraftTokens);
        var request = Corpus().First();
        var plain = await RunAsync(null, request);
        Assert.Equal(plain.TokenIds, (await test.RunAsync(request)).TokenIds);
        test.AssertIdle();
    }

    /// <summary>A model whose steps return each row's last logits only, as graphs without logits_to_keep do.</summary>
    private sealed class LastLogitsOnly(IDecoderModel inner) : IDecoderModel
    {
        public int Slots => inner.Slots;
        public int Capacity => inner.Capacity;
        public int VocabSize => inner.VocabSize;
        public long KvBytesPerToken => inner.KvBytesPerToken;
        public ReadOnlySpan<float> Step(int firstSlot, scoped ReadOnlySpan<SequenceStep> rows, scoped ReadOnlySpan<int> tokens) => inner.Step(firstSlot, rows, tokens);
        public void CopyPrefix(int fromSlot, int toSlot, int length) => inner.CopyPrefix(fromSlot, toSlot, length);
    }

    [Fact]
    public void A_model_without_several_positions_logits_is_refused_with_speculation_on()
    {
        using var runner = new DecoderRunner(model.Folder, new RunnerOptions { MaxBatch = 1, MaxSequenceLength = 64, IntraOpThreads = 1 });
        var error = Assert.Throws<ArgumentException>(() => new InferenceEngine(new LastLogitsOnly(runner), model.Tokenizer, Speculating, startLoop: false));
        Assert.Contains("logits_to_keep", error.Message, StringComparison.Ordinal);
    }
}
