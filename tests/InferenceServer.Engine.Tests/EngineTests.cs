using System.Diagnostics.Metrics;
using InferenceServer.Engine.Sampling;
using static InferenceServer.Engine.Tests.EngineFixture;

namespace InferenceServer.Engine.Tests;

public sealed class EngineTests(EngineFixture model) : IClassFixture<EngineFixture>
{
    private static async Task<int[]> AloneAsync(EngineFixture model, GenerationRequest request)
    {
        await using var alone = new EngineUnderTest(model, slots: 1);
        return [.. (await alone.Engine.Submit(request).CollectAsync()).TokenIds];
    }

    [Fact]
    public async Task Concurrent_requests_arriving_at_different_times_get_the_tokens_they_get_alone()
    {
        var requests = Enumerable.Range(0, 8).Select(i => Greedy(EngineFixture.Prompt(5 + i * 9, seed: i), maxTokens: 20 + i)).ToArray();
        var expected = new int[requests.Length][];
        for (var i = 0; i < requests.Length; i++)
            expected[i] = await AloneAsync(model, requests[i]);

        await using var test = new EngineUnderTest(model);
        var outputs = new List<Task<GenerationResult>>();
        foreach (var request in requests)
        {
            outputs.Add(test.Engine.Submit(request).CollectAsync());
            await Task.Delay(3); // later arrivals join a batch that is already decoding
        }
        var results = await Task.WhenAll(outputs);
        for (var i = 0; i < requests.Length; i++)
        {
            Assert.Equal(expected[i], results[i].TokenIds);
            Assert.Equal(FinishReason.Length, results[i].FinishReason);
            Assert.Equal(requests[i].MaxTokens, results[i].Usage.CompletionTokens);
        }
        await test.AssertIdleAsync();
    }

    [Fact]
    public async Task A_request_arriving_mid_decode_joins_the_batch_and_leaves_it_first()
    {
        await using var test = new EngineUnderTest(model, stepDelay: TimeSpan.FromMilliseconds(2));
        var firstDecode = test.Recorder!.HoldStepAsync(2); // step 1 prefills the long one, step 2 decodes it
        var longOne = test.Engine.Submit(Greedy(EngineFixture.Prompt(10, 1), maxTokens: 200));
        await using var reader = longOne.GetAsyncEnumerator();
        GenerationOutput shortSubmitted;
        using (await firstDecode)
        {
            var held = test.Recorder.Steps[^1];
            Assert.True(held.FirstSlot == 0 && held.Rows is [{ TokenCount: 1 }], "the engine was expected to be held in a decode of slot 0 alone");
            shortSubmitted = test.Engine.Submit(Greedy(EngineFixture.Prompt(6, 2), maxTokens: 3));
        }
        var shortOne = await shortSubmitted.CollectAsync();
        while (await reader.MoveNextAsync())
        {
        }
        Assert.Equal(3, shortOne.TokenIds.Count);

        // Slot 0 decodes alone, then with slot 1 in the same steps, then alone again after slot 1 finished.
        var decodes = test.Recorder!.Steps.Where(s => s.FirstSlot == 0 && s.Rows.All(r => r.TokenCount == 1)).Select(s => s.Rows.Length).ToList();
        var firstPair = decodes.IndexOf(2);
        Assert.True(firstPair > 0, "the short request never decoded in the same step as the long one");
        Assert.Contains(1, decodes.Skip(firstPair).SkipWhile(rows => rows == 2));
        await test.AssertIdleAsync();
    }

    [Fact]
    public async Task Decoding_keeps_flowing_while_a_long_prompt_is_prefilled_in_chunks()
    {
        await using var test = new EngineUnderTest(model, options: new EngineOptions { PrefillChunkTokens = 16, MaxBatchTokens = 20 }, stepDelay: TimeSpan.FromMilliseconds(1));
        var firstDecode = test.Recorder!.HoldStepAsync(2); // step 1 prefills the short prompt, step 2 decodes it
        var decoding = test.Engine.Submit(Greedy(EngineFixture.Prompt(4, 3), maxTokens: 100));
        await using var reader = decoding.GetAsyncEnumerator();
        GenerationOutput longSubmitted;
        using (await firstDecode)
        {
            var held = test.Recorder.Steps[^1];
            Assert.True(held.FirstSlot == 0 && held.Rows is [{ TokenCount: 1 }], "the engine was expected to be held in a decode of slot 0 alone");
            longSubmitted = test.Engine.Submit(Greedy(EngineFixture.Prompt(200, 4), maxTokens: 2));
        }
        var longPrompt = await longSubmitted.CollectAsync();
        while (await reader.MoveNextAsync())
        {
        }
        Assert.Equal(2, longPrompt.TokenIds.Count);

        // The 200-token prompt went in chunks of at most 16 (13 steps on slot 1), and slot 0 kept
        // decoding between them: a decode step between every two chunks.
        var steps = test.Recorder!.Steps;
        var chunks = steps.Select((s, i) => (s, i)).Where(x => x.s.FirstSlot == 1 && x.s.Rows[0].TokenCount > 1).Select(x => x.i).ToList();
        Assert.Equal(13, chunks.Count);
        Assert.All(chunks, i => Assert.True(steps[i].Rows[0].TokenCount <= 16));
        for (var c = 1; c < chunks.Count; c++)
        {
            var between = steps.Skip(chunks[c - 1] + 1).Take(chunks[c] - chunks[c - 1] - 1);
            Assert.Contains(between, s => s.FirstSlot == 0 && s.Rows.All(r => r.TokenCount == 1));
        }
        await test.AssertIdleAsync();
    }

    [Fact]
    public async Task Cancelling_frees_the_sequence_at_the_next_iteration()
    {
        await using var test = new EngineUnderTest(model, stepDelay: TimeSpan.FromMilliseconds(2));
        using var cancel = new CancellationTokenSource();
        var output = test.Engine.Submit(Greedy(EngineFixture.Prompt(12, 5), maxTokens: 200), cancel.Token);
        GenerationEvent? last = null;
        var tokens = 0;
        try
        {
            await foreach (var e in output.WithCancellation(CancellationToken.None))
            {
                tokens += e.TokenIds.Count;
                last = e;
                if (tokens >= 3)
                    await cancel.CancelAsync();
            }
        }
        catch (OperationCanceledException)
        {
        }
        Assert.NotNull(last);
        Assert.True(last.IsFinal);
        Assert.Equal(FinishReason.Cancelled, last.FinishReason);
        Assert.True(last.Usage!.Value.CompletionTokens < 200, $"generated {last.Usage.Value.CompletionTokens} tokens despite the cancellation");
        await test.AssertIdleAsync();
        Assert.True(test.Engine.Snapshot.CachedBlocks > 0, "the cancelled sequence's KV should stay cached for reuse");
    }

    [Fact]
    public async Task Leaving_the_output_unread_cancels_the_generation()
    {
        await using var test = new EngineUnderTest(model, stepDelay: TimeSpan.FromMilliseconds(2));
        var output = test.Engine.Submit(Greedy(EngineFixture.Prompt(12, 6), maxTokens: 200));
        await foreach (var e in output)
        {
            if (e.TokenIds.Count > 0)
                break; // the consumer walks away
        }
        await test.AssertIdleAsync();
        // One step per generated token: far fewer than the 200 asked for.
        Assert.True(test.Recorder!.Steps.Count < 150, $"{test.Recorder.Steps.Count} steps ran after the consumer left");
    }

    [Fact]
    public async Task A_tiny_kv_budget_preempts_and_still_completes_every_request_correctly()
    {
        var requests = Enumerable.Range(0, 4).Select(i => Greedy(EngineFixture.Prompt(20, 10 + i), maxTokens: 40)).ToArray();
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
        await using var tiny = new EngineUnderTest(model, slots: 4, options: new EngineOptions { KvCacheBytes = 8 * 16 * test.Runner.KvBytesPerToken });
        Assert.Equal(8, tiny.Engine.TotalKvBlocks);
        var results = await Task.WhenAll(requests.Select(r => tiny.Engine.Submit(r).CollectAsync()));
        for (var i = 0; i < requests.Length; i++)
            Assert.Equal(expected[i], results[i].TokenIds);
        Assert.True(Interlocked.Read(ref preemptions) > 0, "the budget was expected to force preemptions");
        await tiny.AssertIdleAsync();
    }

    [Fact]
    public async Task Higher_priority_waits_less_and_equal_priorities_go_in_arrival_order()
    {
        await using var test = new EngineUnderTest(model, slots: 1, stepDelay: TimeSpan.FromMilliseconds(2));
        var busy = test.Engine.Submit(Greedy(EngineFixture.Prompt(5, 110), 30));
        await using var reader = busy.GetAsyncEnumerator();
        Assert.True(await reader.MoveNextAsync()); // the only slot is taken; the rest wait
        var order = new List<string>();
        async Task Run(string name, int priority, int seed)
        {
            await test.Engine.Submit(Greedy(EngineFixture.Prompt(5, seed), 2) with { Priority = priority }).CollectAsync();
            lock (order)
                order.Add(name);
        }
        var runs = new[] { Run("first", 0, 111), Run("second", 0, 112), Run("urgent", 5, 113) };
        while (await reader.MoveNextAsync())
        {
        }
        await Task.WhenAll(runs);
        Assert.Equal(["urgent", "first", "second"], order);
        await test.AssertIdleAsync();
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
        var prompt = EngineFixture.Prompt(40, 120);
        await test.Engine.Submit(Greedy(prompt, 6)).CollectAsync();
        await test.Engine.Submit(Greedy([.. prompt, 7, 8], 6)).CollectAsync();
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
        await test.AssertIdleAsync();
    }

    [Fact]
    public async Task A_full_queue_rejects_at_once_with_a_clear_error()
    {
        await using var test = new EngineUnderTest(model, slots: 1, options: new EngineOptions { MaxWaitingRequests = 2 }, stepDelay: TimeSpan.FromMilliseconds(3));
        using var cancel = new CancellationTokenSource();
        var outputs = new List<GenerationOutput>();
        // One runs, two wait (the queue holds two), the fourth is refused.
        outputs.Add(test.Engine.Submit(Greedy(EngineFixture.Prompt(8, 20), maxTokens: 200), cancel.Token));
        for (var i = 0; i < 100 && test.Engine.Snapshot.Running == 0; i++)
            await Task.Delay(10);
        for (var i = 1; i < 3; i++)
            outputs.Add(test.Engine.Submit(Greedy(EngineFixture.Prompt(8, 20 + i), maxTokens: 200), cancel.Token));
        var refused = Assert.Throws<EngineOverloadedException>(() => test.Engine.Submit(Greedy(EngineFixture.Prompt(8, 30), maxTokens: 5)));
        Assert.Contains("queue is full", refused.Message, StringComparison.Ordinal);
        await cancel.CancelAsync();
        foreach (var output in outputs)
        {
            try
            {
                await output.CollectAsync();
            }
            catch (OperationCanceledException)
            {
            }
        }
        await test.AssertIdleAsync();
        // Room again: accepted.
        Assert.Equal(FinishReason.Length, (await test.Engine.Submit(Greedy(EngineFixture.Prompt(8, 31), maxTokens: 2)).CollectAsync()).FinishReason);
    }

    [Fact]
    public async Task A_prompt_sharing_a_finished_prefix_skips_that_prefill_and_says_so()
    {
        var prefix = EngineFixture.Prompt(100, 40);
        int[] extended = [.. prefix, .. EngineFixture.Prompt(7, 41)];
        var expected = await AloneAsync(model, Greedy(extended, 10));

        await using var test = new EngineUnderTest(model);
        var first = await test.Engine.Submit(Greedy(prefix, 5)).CollectAsync();
        Assert.Equal(0, first.Usage.CachedPromptTokens);
        var second = await test.Engine.Submit(Greedy(extended, 10)).CollectAsync();
        Assert.Equal(100, second.Usage.CachedPromptTokens);
        Assert.Equal(expected, second.TokenIds);
        await test.AssertIdleAsync();
    }

    [Fact]
    public async Task A_prompt_sharing_a_running_sequences_prefix_copies_it()
    {
        var prefix = EngineFixture.Prompt(64, 50);
        int[] extended = [.. prefix, 9, 10, 11];
        var expected = await AloneAsync(model, Greedy(extended, 8));

        await using var test = new EngineUnderTest(model);
        var running = test.Engine.Submit(Greedy(prefix, 150));
        await using var reader = running.GetAsyncEnumerator();
        Assert.True(await reader.MoveNextAsync()); // the prefix is computed
        var second = await test.Engine.Submit(Greedy(extended, 8)).CollectAsync();
        Assert.Equal(64, second.Usage.CachedPromptTokens);
        Assert.Equal(expected, second.TokenIds);
        while (await reader.MoveNextAsync())
        {
        }
        await test.AssertIdleAsync();
    }

    [Fact]
    public async Task Stop_strings_stop_ids_and_eos_end_generation_with_reason_stop()
    {
        await using var test = new EngineUnderTest(model);
        var prompt = EngineFixture.Prompt(10, 60);
        var free = await test.Engine.Submit(Greedy(prompt, 30)).CollectAsync();
        Assert.Equal(FinishReason.Length, free.FinishReason);

        // A stop id: generation ends at its first occurrence, which is not in the text.
        var stopId = free.TokenIds[5];
        var byId = await test.Engine.Submit(Greedy(prompt, 30) with { StopTokenIds = [stopId] }).CollectAsync();
        Assert.Equal(FinishReason.Stop, byId.FinishReason);
        Assert.Equal(stopId, byId.TokenIds[^1]);
        Assert.Equal(free.TokenIds.Take(byId.TokenIds.Count), byId.TokenIds);

        // The model's end-of-sequence ids stop unless told to ignore them.
        var byEos = await test.Engine.Submit(Greedy(prompt, 30) with { IgnoreEos = false }).CollectAsync();
        var eos = model.Folder.Config.Model.EosTokenId;
        var stopsAtEos = free.TokenIds.Any(eos.Contains);
        Assert.Equal(stopsAtEos ? FinishReason.Stop : FinishReason.Length, byEos.FinishReason);

        // A stop string: the text before it, and the string itself is not output.
        var stop = free.Text.Substring(free.Text.Length / 2, Math.Min(3, free.Text.Length - free.Text.Length / 2));
        Assert.False(string.IsNullOrEmpty(stop));
        var byString = await test.Engine.Submit(Greedy(prompt, 30) with { StopStrings = [stop] }).CollectAsync();
        Assert.Equal(FinishReason.Stop, byString.FinishReason);
        Assert.Equal(stop, byString.MatchedStop);
        Assert.Equal(free.Text[..free.Text.IndexOf(stop, StringComparison.Ordinal)], byString.Text);
        await test.AssertIdleAsync();
    }

    [Fact]
    public async Task The_same_seed_gives_the_same_sample_whatever_else_is_in_the_batch()
    {
        var request = new GenerationRequest
        {
            PromptTokens = EngineFixture.Prompt(9, 70),
            MaxTokens = 25,
            IgnoreEos = true,
            Sampling = new SamplingParameters { Temperature = 1.0, TopP = 0.95, Seed = 1234 },
        };
        var alone = await AloneAsync(model, request);

        await using var test = new EngineUnderTest(model);
        var others = Enumerable.Range(0, 5).Select(i => test.Engine.Submit(Greedy(EngineFixture.Prompt(15 + i, 80 + i), 30)).CollectAsync()).ToList();
        var inBatch = await test.Engine.Submit(request).CollectAsync();
        await Task.WhenAll(others);
        Assert.Equal(alone, inBatch.TokenIds);
        var otherSeed = await test.Engine.Submit(request with { Sampling = request.Sampling with { Seed = 99 } }).CollectAsync();
        Assert.NotEqual(alone, otherSeed.TokenIds);
        await test.AssertIdleAsync();
    }

    [Fact]
    public async Task Logprobs_come_with_each_token_when_asked()
    {
        await using var test = new EngineUnderTest(model);
        var result = await test.Engine.Submit(Greedy(EngineFixture.Prompt(9, 90), 6) with { Sampling = SamplingParameters.Greedy with { Logprobs = 3 } }).CollectAsync();
        Assert.Equal(6, result.Logprobs.Count);
        foreach (var (entry, token) in result.Logprobs.Zip(result.TokenIds))
        {
            Assert.Equal(token, entry.TokenId);
            Assert.Equal(3, entry.TopAlternatives.Count);
            Assert.Equal(token, entry.TopAlternatives[0].Id); // greedy picks the most likely
            Assert.True(entry.Logprob <= 0);
        }
        await test.AssertIdleAsync();
    }

    [Theory]
    [InlineData(0, 5, "prompt is empty")]
    [InlineData(250, 10, "exceeds the context length of 256")]
    [InlineData(5, 0, "max_tokens must be at least 1")]
    public async Task Invalid_requests_are_refused_before_queuing(int promptLength, int maxTokens, string expected)
    {
        await using var test = new EngineUnderTest(model);
        var e = Assert.Throws<RequestValidationException>(() => test.Engine.Submit(Greedy(EngineFixture.Prompt(promptLength, 1), maxTokens)));
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
        Assert.Throws<RequestValidationException>(() => test.Engine.Submit(Greedy([1, 2, 999], 5)));
        Assert.Throws<RequestValidationException>(() => test.Engine.Submit(Greedy([1, 2], 5) with { Sampling = new SamplingParameters { TopP = 0 } }));
        Assert.Equal(0, test.Engine.Snapshot.Waiting);
    }

    [Fact]
    public async Task Disposing_the_engine_finishes_every_request()
    {
        var test = new EngineUnderTest(model, slots: 1, stepDelay: TimeSpan.FromMilliseconds(3));
        var running = test.Engine.Submit(Greedy(EngineFixture.Prompt(8, 100), 200)).CollectAsync();
        var waiting = test.Engine.Submit(Greedy(EngineFixture.Prompt(8, 101), 200)).CollectAsync();
        await Task.Delay(30);
        await test.DisposeAsync();
        Assert.Equal(FinishReason.Cancelled, (await running).FinishReason);
        Assert.Equal(FinishReason.Cancelled, (await waiting).FinishReason);
        Assert.Throws<EngineStoppedException>(() => test.Engine.Submit(Greedy([1, 2], 1)));
    }
}
