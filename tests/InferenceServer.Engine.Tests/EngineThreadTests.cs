using static InferenceServer.Engine.Tests.EngineFixture;

namespace InferenceServer.Engine.Tests;

/// <summary>
/// What only the engine's own thread can show: a request cancelled from another thread, and
/// shutdown with requests in flight (a model step that throws: <see cref="RequestAccountingTests"/>).
/// The executor is scripted (no model), so nothing here waits on a clock or holds a step.
/// </summary>
public sealed class EngineThreadTests(TokenizerFixture model) : IClassFixture<TokenizerFixture>
{
    // Long enough that no generation here can end on its own before the test acts on it.
    private const int Capacity = 1 << 20;

    [Fact]
    public async Task A_request_cancelled_from_another_thread_ends_cancelled_and_leaves_its_kv_cached()
    {
        var executor = new ScriptedExecutor(model.Tokenizer.VocabSize);
        var engine = ScriptedEngines.Create(model.Tokenizer, executor, startLoop: true, capacity: Capacity);
        using var cancel = new CancellationTokenSource();
        var output = engine.Submit(Greedy(Prompt(40, 5), maxTokens: Capacity - 100), cancel.Token);
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
        await engine.DisposeAsync();
        var s = engine.Snapshot;
        Assert.Equal(1, s.Cancellations);
        Assert.Equal(0, s.UsedBlocks);
        Assert.True(s.CachedBlocks > 0, "the cancelled sequence's KV should stay cached for reuse");
    }

    [Fact]
    public async Task Disposing_the_engine_finishes_every_request()
    {
        var executor = new ScriptedExecutor(model.Tokenizer.VocabSize);
        var engine = ScriptedEngines.Create(model.Tokenizer, executor, startLoop: true, slots: 1, capacity: Capacity);
        var running = engine.Submit(Greedy(Prompt(8, 100), Capacity - 100));
        await using (var reader = running.GetAsyncEnumerator())
        {
            Assert.True(await reader.MoveNextAsync()); // it runs; the next one waits for the only slot
            var waiting = engine.Submit(Greedy(Prompt(8, 101), 200)).CollectAsync();
            await engine.DisposeAsync();
            while (await reader.MoveNextAsync() && !reader.Current.IsFinal)
            {
            }
            Assert.Equal(FinishReason.Cancelled, reader.Current.FinishReason);
            Assert.Equal(FinishReason.Cancelled, (await waiting).FinishReason);
        }
        Assert.Throws<EngineStoppedException>(() => engine.Submit(Greedy([1, 2], 1)));
        Assert.Equal(0, engine.Snapshot.UsedBlocks);
    }
}
