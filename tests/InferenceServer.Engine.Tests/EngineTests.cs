using System.Diagnostics.Metrics;
using InferenceServer.Engine.Sampling;
using static InferenceServer.Engine.Tests.EngineFixture;

namespace InferenceServer.Engine.Tests;

/// <summary>
/// The engine stepped by the test (no thread), over the real small model on the dense path: the
/// tokens a request gets, prefix reuse, stops, sampling, metrics, validation; and over a scripted
/// executor, that an iteration allocates nothing. What only threads
/// can show is in <see cref="EngineThreadTests"/>; what the scheduler decides alone, in <see cref="SchedulerTests"/>.
/// </summary>
public sealed class EngineTests(EngineFixture model) : IClassFixture<EngineFixture>
{
    private static async Task<int[]> AloneAsync(EngineFixture model, GenerationRequest request)
    {
        await using var alone = new EngineUnderTest(model, slots: 1);
        return [.. (await alone.RunAsync(request)).TokenIds];
    }

    [Fact]
    public async Task Concurrent_requests_arriving_at_different_times_get_the_tokens_they_get_alone()
    {
        var requests = Enumerable.Range(0, 8).Select(i => Greedy(Prompt(5 + i * 9, seed: i), maxTokens: 20 + i)).ToArray();
        var expected = new int[requests.Length][];
        for (var i = 0; i < requests.Length; i++)
            expected[i] = await AloneAsync(model, requests[i]);

        await using var test = new EngineUnderTest(model);
        var outputs = new List<GenerationOutput>();
        foreach (var request in requests)
        {
            outputs.Add(test.Submit(request));
            // Later arrivals join a batch that is already decoding.
            test.Step();
            test.Step();
        }
        var results = await test.RunAsync([.. outputs]);
        for (var i = 0; i < requests.Length; i++)
        {
            Assert.Equal(expected[i], results[i].TokenIds);
            Assert.Equal(FinishReason.Length, results[i].FinishReason);
            Assert.Equal(requests[i].MaxTokens, results[i].Usage.CompletionTokens);
        }
        test.AssertIdle();
    }

    [Fact]
    public async Task A_request_arriving_mid_decode_joins_the_batch_and_leaves_it_first()
    {
        await using var test = new EngineUnderTest(model);
        var longOne = test.Submit(Greedy(Prompt(10, 1), maxTokens: 30));
        test.Step(); // the prefill
        test.Step(); // a decode of slot 0 alone
        var shortOne = test.Submit(Greedy(Prompt(6, 2), maxTokens: 3));
        var results = await test.RunAsync(longOne, shortOne);
        Assert.Equal(3, results[1].TokenIds.Count);

        // Slot 0 decodes alone, then with slot 1 in the same steps, then alone again after slot 1 finished.
        var decodes = test.Recorder.Steps.Where(s => s.FirstSlot == 0 && s.Rows.All(r => r.TokenCount == 1)).Select(s => s.Rows.Length).ToList();
        Assert.Equal(1, decodes[0]);
        var firstPair = decodes.IndexOf(2);
        Assert.True(firstPair > 0, "the short request never decoded in the same step as the long one");
        Assert.Contains(1, decodes.Skip(firstPair).SkipWhile(rows => rows == 2));
        test.AssertIdle();
    }

    [Fact]
    public async Task The_dense_executor_runs_whole_fresh_prompts_together_other_chunks_alone_and_then_every_decode_in_one_step()
    {
        await using var test = new EngineUnderTest(model, options: new EngineOptions { PrefillChunkTokens = 16, MaxBatchTokens = 64 });
        var decoding = test.Submit(Greedy(Prompt(4, 3), maxTokens: 40));
        test.Step();
        var before = test.Recorder.Steps.Count;
        GenerationOutput[] arriving = [test.Submit(Greedy(Prompt(40, 4), maxTokens: 2)), test.Submit(Greedy(Prompt(6, 5), maxTokens: 2)), test.Submit(Greedy(Prompt(7, 6), maxTokens: 2))];
        test.Step();
        // One iteration: the 40-token prompt's first chunk alone (not padded onto the short ones),
        // the two short prompts in adjacent fresh slots as one batch, then one decode run: slot 0,
        // a scratch row for slot 1 (still in its prompt), and the two prompts just finished.
        var steps = test.Recorder.Steps.Skip(before).ToList();
        Assert.Equal([(1, 1), (2, 2), (0, 4)], steps.Select(s => (s.FirstSlot, s.Rows.Length)));
        Assert.Equal((0, 16), (steps[0].Rows[0].PastLength, steps[0].Rows[0].TokenCount));
        Assert.Equal([(0, 6), (0, 7)], steps[1].Rows.Select(r => (r.PastLength, r.TokenCount)));
        Assert.Equal([(5, 1), (16, 1), (6, 1), (7, 1)], steps[2].Rows.Select(r => (r.PastLength, r.TokenCount)));
        test.Step();
        // The next chunk continues a past: a run of its own, at its slot.
        Assert.Contains(test.Recorder.Steps.Skip(before + 3), s => s.FirstSlot == 1 && s.Rows is [{ PastLength: 16, TokenCount: 16 }]);
        await test.RunAsync([decoding, .. arriving]);
        test.AssertIdle();
    }

    [Fact]
    public async Task Cancelling_frees_the_sequence_at_the_next_iteration()
    {
        await using var test = new EngineUnderTest(model);
        using var cancel = new CancellationTokenSource();
        var output = test.Submit(Greedy(Prompt(12, 5), maxTokens: 200), cancel.Token);
        for (var i = 0; i < 4; i++)
            test.Step();
        var steps = test.Recorder.Steps.Count;
        await cancel.CancelAsync();
        test.Step();
        Assert.Equal(steps, test.Recorder.Steps.Count); // no step ran for it
        var result = await output.CollectAsync();
        Assert.Equal(FinishReason.Cancelled, result.FinishReason);
        Assert.Equal(5, result.Usage.CompletionTokens); // the prompt's token and a decode, then three decodes
        test.AssertIdle();
        Assert.True(test.Engine.Snapshot.CachedBlocks > 0, "the cancelled sequence's KV should stay cached for reuse");
        Assert.Equal(1, test.Engine.Snapshot.Cancellations);
    }

    [Fact]
    public async Task Leaving_the_output_unread_cancels_the_generation()
    {
        await using var test = new EngineUnderTest(model);
        var output = test.Submit(Greedy(Prompt(12, 6), maxTokens: 200));
        test.Step();
        await foreach (var e in output)
        {
            if (e.TokenIds.Count > 0)
                break; // the consumer walks away
        }
        var steps = test.Recorder.Steps.Count;
        test.Step();
        Assert.Equal(steps, test.Recorder.Steps.Count);
        test.AssertIdle();
    }

    [Fact]
    public async Task A_tiny_kv_budget_preempts_and_still_completes_every_request_correctly()
    {
        var requests = Enumerable.Range(0, 4).Select(i => Greedy(Prompt(20, 10 + i), maxTokens: 40)).ToArray();
        var expected = new int[requests.Length][];
        for (var i = 0; i < requests.Length; i++)
            expected[i] = await AloneAsync(model, requests[i]);

        var preemptions = 0L;
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == "InferenceServer.Engine" && instrument.Name == "inference.preemptions")
                l.EnableMeasurementEvents(instrument);
        };
        listener.SetMeasurementEventCallback<long>((_, value, _, _) => Interlocked.Add(ref preemptions, value));
        listener.Start();

        // Eight blocks of 16 tokens: two sequences of 60 tokens at most, four requests.
        await using var test = new EngineUnderTest(model, slots: 4);
        await using var tiny = new EngineUnderTest(model, slots: 4, options: new EngineOptions { KvCacheBytes = 8 * 16 * test.Recorder.KvBytesPerToken });
        Assert.Equal(8, tiny.Engine.TotalKvBlocks);
        var results = await tiny.RunAsync([.. requests.Select(r => tiny.Submit(r))]);
        for (var i = 0; i < requests.Length; i++)
            Assert.Equal(expected[i], results[i].TokenIds);
        Assert.True(Interlocked.Read(ref preemptions) > 0, "the budget was expected to force preemptions");
        tiny.AssertIdle();
    }

    [Fact]
    public async Task Instruments_count_tokens_and_time_requests()
    {
        var measurements = new Dictionary<string, double>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == "InferenceServer.Engine")
                l.EnableMeasurementEvents(instrument);
        };
        void Add(Instrument instrument, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags = default)
        {
            // A tagged measurement counts under its instrument and under "instrument/tag=value" too.
            var names = new List<string> { instrument.Name };
            foreach (var tag in tags)
                names.Add($"{instrument.Name}/{tag.Key}={tag.Value}");
            lock (measurements)
            {
                foreach (var name in names)
                    measurements[name] = measurements.GetValueOrDefault(name) + value;
            }
        }
        listener.SetMeasurementEventCallback<long>((i, v, tags, _) => Add(i, v, tags));
        listener.SetMeasurementEventCallback<int>((i, v, _, _) => Add(i, v));
        listener.SetMeasurementEventCallback<double>((i, v, _, _) => Add(i, 1)); // histograms: count records
        listener.Start();

        await using var test = new EngineUnderTest(model);
        var prompt = Prompt(40, 120);
        await test.RunAsync(Greedy(prompt, 6));
        await test.RunAsync(Greedy([.. prompt, 7, 8], 6));
        listener.RecordObservableInstruments();

        lock (measurements)
        {
            Assert.True(measurements["inference.tokens.generated"] >= 12);
            Assert.True(measurements["inference.tokens.prompt"] >= 82);
            Assert.True(measurements["inference.tokens.prefix_hit"] >= 40);
            Assert.True(measurements["inference.time_to_first_token"] >= 2);
            Assert.True(measurements["inference.inter_token_latency"] >= 10);
            Assert.True(measurements["inference.request.duration"] >= 2);
            Assert.True(measurements.ContainsKey("inference.kv.blocks.cached"));
            Assert.True(measurements.ContainsKey("inference.kv.usage"));
            Assert.True(measurements["inference.request.queue_time"] >= 2);
            // At least a prefill and a decode iteration per request ran the model.
            Assert.True(measurements["inference.iteration.duration"] >= 4);
            // Six tokens each without ignore_eos: each ends by length or at an end-of-sequence id (stop).
            Assert.True(measurements["inference.requests.finished"] >= 2);
            Assert.All(measurements.Keys.Where(k => k.StartsWith("inference.requests.finished/", StringComparison.Ordinal)),
                k => Assert.Contains(k, new[] { "inference.requests.finished/finished_reason=stop", "inference.requests.finished/finished_reason=length", "inference.requests.finished/finished_reason=abort" }));
        }
        test.AssertIdle();
    }

    [Fact]
    public async Task A_full_queue_rejects_at_once_with_a_clear_error_and_takes_requests_again_once_there_is_room()
    {
        await using var test = new EngineUnderTest(model, slots: 1, options: new EngineOptions { MaxWaitingRequests = 2 });
        using var cancel = new CancellationTokenSource();
        // One runs, two wait (the queue holds two), the fourth is refused.
        var outputs = new List<GenerationOutput> { test.Submit(Greedy(Prompt(8, 20), maxTokens: 200), cancel.Token) };
        test.Step();
        Assert.Equal(1, test.Engine.Snapshot.Running);
        for (var i = 1; i < 3; i++)
            outputs.Add(test.Submit(Greedy(Prompt(8, 20 + i), maxTokens: 200), cancel.Token));
        var refused = Assert.Throws<EngineOverloadedException>(() => test.Submit(Greedy(Prompt(8, 30), maxTokens: 5)));
        Assert.Contains("queue is full", refused.Message, StringComparison.Ordinal);
        Assert.Equal(RequestErrorCode.ResourceExhausted, refused.Code);
        await cancel.CancelAsync();
        foreach (var result in await test.RunAsync([.. outputs]))
            Assert.Equal(FinishReason.Cancelled, result.FinishReason);
        test.AssertIdle();
        // Room again: accepted.
        Assert.Equal(FinishReason.Length, (await test.RunAsync(Greedy(Prompt(8, 31), maxTokens: 2))).FinishReason);
    }

    [Fact]
    public async Task A_prompt_sharing_a_finished_prefix_skips_that_prefill_and_says_so()
    {
        var prefix = Prompt(100, 40);
        int[] extended = [.. prefix, .. Prompt(7, 41)];
        var expected = await AloneAsync(model, Greedy(extended, 10));

        await using var test = new EngineUnderTest(model);
        var first = await test.RunAsync(Greedy(prefix, 5));
        Assert.Equal(0, first.Usage.CachedPromptTokens);
        var second = await test.RunAsync(Greedy(extended, 10));
        Assert.Equal(100, second.Usage.CachedPromptTokens);
        Assert.Equal(expected, second.TokenIds);
        test.AssertIdle();
    }

    [Fact]
    public async Task A_prompt_sharing_a_running_sequences_prefix_copies_it()
    {
        var prefix = Prompt(64, 50);
        int[] extended = [.. prefix, 9, 10, 11];
        var expected = await AloneAsync(model, Greedy(extended, 8));

        await using var test = new EngineUnderTest(model);
        var running = test.Submit(Greedy(prefix, 30));
        test.Step(); // the prefix is computed
        var results = await test.RunAsync(running, test.Submit(Greedy(extended, 8)));
        Assert.Equal(64, results[1].Usage.CachedPromptTokens);
        Assert.Equal(expected, results[1].TokenIds);
        test.AssertIdle();
    }

    [Fact]
    public async Task Stop_strings_stop_ids_and_eos_end_generation_with_reason_stop()
    {
        await using var test = new EngineUnderTest(model);
        var prompt = Prompt(10, 60);
        var free = await test.RunAsync(Greedy(prompt, 30));
        Assert.Equal(FinishReason.Length, free.FinishReason);

        // A stop id: generation ends at its first occurrence, which is not in the text.
        var stopId = free.TokenIds[5];
        var byId = await test.RunAsync(Greedy(prompt, 30) with { StopTokenIds = [stopId] });
        Assert.Equal(FinishReason.Stop, byId.FinishReason);
        Assert.Equal(stopId, byId.TokenIds[^1]);
        Assert.Equal(free.TokenIds.Take(byId.TokenIds.Count), byId.TokenIds);

        // The model's end-of-sequence ids stop unless told to ignore them.
        var byEos = await test.RunAsync(Greedy(prompt, 30) with { IgnoreEos = false });
        var eos = model.Folder.Config.Model.EosTokenId;
        var stopsAtEos = free.TokenIds.Any(eos.Contains);
        Assert.Equal(stopsAtEos ? FinishReason.Stop : FinishReason.Length, byEos.FinishReason);

        // A stop string: the text before it, and the string itself is not output.
        var stop = free.Text.Substring(free.Text.Length / 2, Math.Min(3, free.Text.Length - free.Text.Length / 2));
        Assert.False(string.IsNullOrEmpty(stop));
        var byString = await test.RunAsync(Greedy(prompt, 30) with { StopStrings = [stop] });
        Assert.Equal(FinishReason.Stop, byString.FinishReason);
        Assert.Equal(stop, byString.MatchedStop);
        Assert.Equal(free.Text[..free.Text.IndexOf(stop, StringComparison.Ordinal)], byString.Text);
        test.AssertIdle();
    }

    [Fact]
    public async Task The_same_seed_gives_the_same_sample_whatever_else_is_in_the_batch()
    {
        var request = new GenerationRequest
        {
            PromptTokens = Prompt(9, 70),
            MaxTokens = 25,
            IgnoreEos = true,
            Sampling = new SamplingParameters { Temperature = 1.0, TopP = 0.95, Seed = 1234 },
        };
        var alone = await AloneAsync(model, request);

        await using var test = new EngineUnderTest(model);
        var others = Enumerable.Range(0, 5).Select(i => test.Submit(Greedy(Prompt(15 + i, 80 + i), 30))).ToList();
        var inBatch = (await test.RunAsync([test.Submit(request), .. others]))[0];
        Assert.Equal(alone, inBatch.TokenIds);
        var otherSeed = await test.RunAsync(request with { Sampling = request.Sampling with { Seed = 99 } });
        Assert.NotEqual(alone, otherSeed.TokenIds);
        test.AssertIdle();
    }

    [Fact]
    public async Task Logprobs_come_with_each_token_when_asked()
    {
        await using var test = new EngineUnderTest(model);
        var result = await test.RunAsync(Greedy(Prompt(9, 90), 6) with { Sampling = SamplingParameters.Greedy with { Logprobs = 3 } });
        Assert.Equal(6, result.Logprobs.Count);
        foreach (var (entry, token) in result.Logprobs.Zip(result.TokenIds))
        {
            Assert.Equal(token, entry.TokenId);
            Assert.Equal(3, entry.TopAlternatives.Count);
            Assert.Equal(token, entry.TopAlternatives[0].Id); // greedy picks the most likely
            Assert.True(entry.Logprob <= 0);
        }
        test.AssertIdle();
    }

    [Theory]
    [InlineData(0, 5, "prompt is empty")]
    [InlineData(250, 10, "exceeds this model's context length of 256")]
    [InlineData(5, 0, "max_tokens must be at least 1")]
    public async Task Invalid_requests_are_refused_before_queuing(int promptLength, int maxTokens, string expected)
    {
        await using var test = new EngineUnderTest(model);
        var e = Assert.Throws<RequestValidationException>(() => test.Submit(Greedy(Prompt(promptLength, 1), maxTokens)));
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
        Assert.Throws<RequestValidationException>(() => test.Submit(Greedy([1, 2, 999], 5)));
        Assert.Throws<RequestValidationException>(() => test.Submit(Greedy([1, 2], 5) with { Sampling = new SamplingParameters { TopP = 0 } }));
        Assert.Equal(0, test.Engine.Snapshot.Waiting);
    }

    [Fact]
    public async Task An_adapter_the_model_has_not_loaded_is_refused_before_queuing()
    {
        await using var test = new EngineUnderTest(model);
        var e = Assert.Throws<RequestValidationException>(() => test.Submit(Greedy([1, 2], 5) with { AdapterId = 1 }));
        Assert.Contains("no adapters loaded", e.Message, StringComparison.Ordinal);
        Assert.Throws<RequestValidationException>(() => test.Submit(Greedy([1, 2], 5) with { AdapterId = -1 }));
        Assert.Equal(0, test.Engine.Snapshot.Waiting);
    }

    [Fact]
    public async Task A_request_is_validated_once_into_a_type_only_its_engine_takes()
    {
        await using var test = new EngineUnderTest(model);
        await using var shorter = new EngineUnderTest(model, capacity: 128);
        var validated = test.Engine.Validate(Greedy(Prompt(8, 2), 4));
        Assert.Throws<ArgumentException>(() => shorter.Engine.Submit(validated));
        var refused = Assert.Throws<RequestValidationException>(() => shorter.Engine.Validate(Greedy(Prompt(120, 2), 10)));
        Assert.Equal(RequestErrorCode.InvalidArgument, refused.Code);
        Assert.Equal("the prompt (120 tokens) plus max_tokens (10) exceeds this model's context length of 128 tokens", refused.Message);
        Assert.Equal(4, (await test.RunAsync(test.Engine.Submit(validated)))[0].TokenIds.Count);
        test.AssertIdle();
    }

    [Theory]
    [InlineData("dense")]
    [InlineData("paged")]
    public async Task An_iteration_allocates_nothing_once_its_sequences_decode(string layout)
    {
        var executor = new ScriptedExecutor(model.Tokenizer.VocabSize) { Record = false };
        var engine = ScriptedEngines.Create(model.Tokenizer, executor, capacity: 2048, layout: layout);
        var outputs = Enumerable.Range(0, 4).Select(i => engine.Submit(Greedy(Prompt(8 + i, 200 + i), 1500))).ToList();
        for (var i = 0; i < 20; i++)
            engine.Iterate();
        var before = GC.GetAllocatedBytesForCurrentThread();
        for (var i = 0; i < 200; i++)
            engine.Iterate();
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(0, allocated);
        Assert.All(outputs, o => Assert.False(o.IsFinished));

        // Disposing an engine without its thread ends what it still holds, as the thread would.
        await engine.DisposeAsync();
        Assert.All(outputs, o => Assert.True(o.IsFinished));
        Assert.Equal(0, engine.Snapshot.UsedBlocks);
    }
}
