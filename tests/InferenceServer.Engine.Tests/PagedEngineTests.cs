using System.Text;
using InferenceServer.Engine.Sampling;
using static InferenceServer.Engine.Tests.EngineFixture;

namespace InferenceServer.Engine.Tests;

/// <summary>
/// The engine on the paged path: one model step per iteration mixing prefill chunks and decodes,
/// block tables from the paged KV cache, prefix blocks shared, sampling from the graph's
/// reductions. The model is <see cref="ReferencePagedModel"/>: the paged contract on the CPU
/// over the real small model.
/// </summary>
public sealed class PagedEngineTests(EngineFixture model) : IClassFixture<EngineFixture>
{
    private EngineUnderTest Paged(int kvBlocks = 64, EngineOptions? options = null, int topK = 8) =>
        new(model, new ReferencePagedModel(model.Folder, kvBlocks, topK: topK), options);

    private async Task<GenerationResult> AloneAsync(GenerationRequest request)
    {
        await using var alone = Paged();
        return await alone.RunAsync(request);
    }

    [Fact]
    public async Task Concurrent_requests_get_the_tokens_they_get_alone_in_one_step_per_iteration()
    {
        // A long prompt (13 chunks of 16) arriving with short ones: its chunks share steps with their decodes.
        var requests = new[] { Greedy(EngineFixture.Prompt(200, seed: 9), maxTokens: 3) }
            .Concat(Enumerable.Range(0, 5).Select(i => Greedy(EngineFixture.Prompt(5 + i * 13, seed: i), maxTokens: 10 + i))).ToArray();
        var expected = new List<int[]>();
        foreach (var request in requests)
            expected.Add([.. (await AloneAsync(request)).TokenIds]);

        await using var test = Paged(options: new EngineOptions { PrefillChunkTokens = 16, MaxBatchTokens = 40 });
        var results = await test.RunAsync([.. requests.Select(r => test.Submit(r))]);
        for (var i = 0; i < requests.Length; i++)
        {
            Assert.Equal(expected[i], results[i].TokenIds);
            Assert.Equal(FinishReason.Length, results[i].FinishReason);
        }

        // Prefill chunks (several tokens) and decodes (one) of different sequences shared steps,
        // no step carried more than the budget, no chunk more than its limit.
        var steps = test.Paged!.Steps;
        Assert.Contains(steps, s => s.Rows.Any(r => r.TokenCount > 1) && s.Rows.Any(r => r.TokenCount == 1 && r.PastLength > 0));
        Assert.All(steps, s => Assert.InRange(s.Rows.Sum(r => r.TokenCount), 1, 40));
        Assert.All(steps, s => Assert.All(s.Rows, r => Assert.InRange(r.TokenCount, 1, 16)));
        // Greedy without logprobs samples from the reductions: no logits rows came back.
        Assert.DoesNotContain(steps, s => s.WithLogits);
        test.AssertIdle();
    }

    [Fact]
    public async Task A_shared_prompt_prefix_is_served_from_cached_blocks()
    {
        var shared = EngineFixture.Prompt(50, seed: 11);
        var first = Greedy(shared, maxTokens: 4);
        var second = Greedy([.. shared[..40], .. EngineFixture.Prompt(7, seed: 12)], maxTokens: 12);
        var expected = await AloneAsync(second);

        await using var test = Paged();
        var firstResult = await test.RunAsync(first);
        var secondResult = await test.RunAsync(second);

        Assert.Equal(0, firstResult.Usage.CachedPromptTokens);
        Assert.Equal(32, secondResult.Usage.CachedPromptTokens); // two full blocks of 16 of the 40 shared tokens
        Assert.Equal(expected.TokenIds, secondResult.TokenIds);
        // The second prompt's first step started after the cached blocks.
        Assert.Contains(test.Paged!.Steps, s => s.Rows.Any(r => r.PastLength == 32 && r.TokenCount == 47 - 32));
        test.AssertIdle();
        Assert.True(test.Engine.Snapshot.CachedBlocks > 0);
    }

    [Fact]
    public async Task A_prefill_only_request_generates_nothing_and_leaves_its_prompt_cached()
    {
        var prompt = EngineFixture.Prompt(40, seed: 21);
        await using var test = Paged();
        var warm = await test.RunAsync(Greedy(prompt, maxTokens: 1) with { PrefillOnly = true });
        Assert.Empty(warm.TokenIds);
        Assert.Equal("", warm.Text);
        Assert.Equal(FinishReason.Length, warm.FinishReason);
        Assert.Equal(40, warm.Usage.PromptTokens);
        Assert.Equal(0, warm.Usage.CompletionTokens);
        test.AssertIdle();

        var next = await test.RunAsync(Greedy([.. prompt, .. EngineFixture.Prompt(3, seed: 22)], maxTokens: 2));
        Assert.Equal(32, next.Usage.CachedPromptTokens); // the warm-up's two full blocks of 16
        Assert.Equal(2, next.Usage.CompletionTokens);
        test.AssertIdle();
    }

    [Fact]
    public async Task When_the_pool_runs_out_sequences_are_preempted_and_still_get_their_tokens()
    {
        var requests = Enumerable.Range(0, 4).Select(i => Greedy(EngineFixture.Prompt(20, seed: 30 + i), maxTokens: 40)).ToArray();
        var expected = new List<int[]>();
        foreach (var request in requests)
            expected.Add([.. (await AloneAsync(request)).TokenIds]);

        // Each needs 4 blocks of 16 by its end; 10 blocks cannot hold all four at once.
        await using var test = Paged(kvBlocks: 10);
        var results = await test.RunAsync([.. requests.Select(r => test.Submit(r))]);
        for (var i = 0; i < requests.Length; i++)
            Assert.Equal(expected[i], results[i].TokenIds);
        test.AssertIdle();
    }

    [Fact]
    public async Task Seeded_sampling_and_penalties_use_the_logits_rows_and_match_the_run_alone()
    {
        var request = Greedy(EngineFixture.Prompt(9, seed: 40), maxTokens: 16) with
        {
            Sampling = new SamplingParameters { Temperature = 0.9, TopP = 0.9, Seed = 1234, RepetitionPenalty = 1.2 },
        };
        var expected = await AloneAsync(request);

        await using var test = Paged();
        var noise = test.Submit(Greedy(EngineFixture.Prompt(12, seed: 41), maxTokens: 20));
        var result = (await test.RunAsync(test.Submit(request), noise))[0];

        Assert.Equal(expected.TokenIds, result.TokenIds);
        Assert.Contains(test.Paged!.Steps, s => s.WithLogits);
        test.AssertIdle();
    }

    [Fact]
    public async Task Top_k_sampling_draws_from_the_reduced_logits_as_it_would_from_the_rows()
    {
        var request = Greedy(EngineFixture.Prompt(9, seed: 45), maxTokens: 16) with
        {
            Sampling = new SamplingParameters { Temperature = 1.2, TopK = 6, TopP = 0.95, Seed = 77, Logprobs = 2 },
        };
        // A graph reducing to 4 logits cannot serve top_k = 6: those steps fetch the rows.
        await using var rows = Paged(topK: 4);
        var expected = await rows.RunAsync(request);
        Assert.All(rows.Paged!.Steps, s => Assert.True(s.WithLogits));

        await using var test = Paged(topK: 8);
        var noise = test.Submit(Greedy(EngineFixture.Prompt(12, seed: 46), maxTokens: 20));
        var result = (await test.RunAsync(test.Submit(request), noise))[0];

        Assert.Equal(expected.TokenIds, result.TokenIds);
        // The rows' logprobs normalize in double, the reduction's logsumexp is a float.
        Assert.Equal(expected.Logprobs.Count, result.Logprobs.Count);
        foreach (var (e, a) in expected.Logprobs.Zip(result.Logprobs))
        {
            Assert.Equal(e.Logprob, a.Logprob, tolerance: 1e-4);
            Assert.Equal(e.TopAlternatives.Select(t => t.Id), a.TopAlternatives.Select(t => t.Id));
        }
        Assert.DoesNotContain(test.Paged!.Steps, s => s.WithLogits);
        test.AssertIdle();
        rows.AssertIdle();
    }

    [Fact]
    public async Task Greedy_logprobs_come_from_the_top_k_and_logsumexp()
    {
        var request = Greedy(EngineFixture.Prompt(9, seed: 50), maxTokens: 5) with { Sampling = SamplingParameters.Greedy with { Logprobs = 3 } };
        await using var test = Paged();
        var result = await test.RunAsync(request);

        Assert.Equal(5, result.Logprobs.Count);
        foreach (var item in result.Logprobs)
        {
            Assert.Equal(3, item.TopAlternatives.Count);
            Assert.Equal(item.TopAlternatives[0].Id, item.TokenId); // greedy: the chosen token is the best
            Assert.Equal(item.TopAlternatives[0].Logprob, item.Logprob);
            Assert.True(item.Logprob <= 0 && item.Logprob > -20);
            Assert.True(item.TopAlternatives[0].Logprob >= item.TopAlternatives[1].Logprob);
        }
        Assert.DoesNotContain(test.Paged!.Steps, s => s.WithLogits);
        test.AssertIdle();
    }

    [Fact]
    public async Task Token_healing_works_on_the_paged_path()
    {
        var tokenizer = model.Tokenizer;
        var request = Greedy(tokenizer.Encode("def f(x):\n    "), maxTokens: 5) with { HealPromptEnd = true };
        var healed = tokenizer.Healing!.HealableEnd(request.PromptTokens.ToArray())!;

        await using var test = Paged();
        var result = await test.RunAsync(request);

        var bytes = result.TokenIds.SelectMany(id => tokenizer.Healing.Bytes(id).ToArray()).ToArray();
        Assert.True(bytes.AsSpan().StartsWith(healed));
        Assert.Equal(Encoding.UTF8.GetString(bytes.AsSpan(healed.Length)), result.Text);
        test.AssertIdle();
    }

    [Fact]
    public async Task A_cancelled_request_gives_its_blocks_back()
    {
        await using var test = Paged();
        using var cancel = new CancellationTokenSource();
        var output = test.Submit(Greedy(EngineFixture.Prompt(30, seed: 60), maxTokens: 200), cancel.Token);
        test.Step();
        test.Step();
        Assert.True(test.Engine.Snapshot.UsedBlocks > 0);
        await cancel.CancelAsync();
        test.Step();
        Assert.Equal(FinishReason.Cancelled, (await output.CollectAsync()).FinishReason);
        test.AssertIdle();
        Assert.True(test.Engine.Snapshot.CachedBlocks > 0); // its full block stays findable
    }
}
