using InferenceServer.Model;
using static InferenceServer.Engine.Tests.EngineFixture;

namespace InferenceServer.Engine.Tests;

/// <summary>Every way out of the engine gives back what the request took, its queue place and its KV blocks: a failing model step too (on the loop's thread).</summary>
public sealed class RequestAccountingTests(EngineFixture model) : IClassFixture<EngineFixture>
{
    [Fact]
    public async Task Requests_refused_at_submission_take_no_place_in_the_queue()
    {
        await using var test = new EngineUnderTest(model, slots: 1, options: new EngineOptions { MaxWaitingRequests = 2 });
        var prompt = Prompt(8, 60);
        for (var i = 0; i < 300; i++)
        {
            // Near int.MaxValue, prompt + max_tokens once wrapped around to a negative total and passed.
            var refused = Assert.Throws<RequestValidationException>(() => test.Submit(Greedy(prompt, int.MaxValue - i)));
            Assert.Contains("context length", refused.Message, StringComparison.Ordinal);
        }
        Assert.Throws<RequestValidationException>(() => test.Submit(Greedy(prompt, 4) with { StopTokenIds = [-1] }));
        Assert.Equal(0, test.Engine.Snapshot.Waiting);

        // The queue still holds its two: one request runs, two wait, the next is refused.
        using var cancel = new CancellationTokenSource();
        var outputs = new List<GenerationOutput> { test.Submit(Greedy(prompt, 50), cancel.Token) };
        test.Step();
        outputs.Add(test.Submit(Greedy(prompt, 2), cancel.Token));
        outputs.Add(test.Submit(Greedy(prompt, 2), cancel.Token));
        Assert.Throws<EngineOverloadedException>(() => test.Submit(Greedy(prompt, 2)));
        await cancel.CancelAsync();
        // The engine's own final events: each request has given its place back by then.
        foreach (var result in await test.RunAsync([.. outputs]))
            Assert.Equal(FinishReason.Cancelled, result.FinishReason);
        test.AssertIdle();
        Assert.Equal(FinishReason.Length, (await test.RunAsync(Greedy(prompt, 2))).FinishReason);
        test.AssertIdle();
    }

    [Fact]
    public async Task A_request_admitted_and_preempted_in_one_iteration_gives_its_queue_place_back_once()
    {
        // Two blocks of 16: the first sequence fills its block and needs the one the second just took.
        var executor = new ScriptedExecutor(model.Tokenizer.VocabSize);
        await using var engine = ScriptedEngines.Create(model.Tokenizer, executor, new EngineOptions { KvCacheBytes = 2 * 16, MaxWaitingRequests = 1 }, slots: 2);
        var first = engine.Submit(Greedy(Prompt(15, 61), 8));
        engine.Iterate(); // its prompt: 15 positions
        engine.Iterate(); // its first decode: 16, a full block
        var second = engine.Submit(Greedy(Prompt(3, 62), 8));
        for (var i = 0; i < 200 && !(first.IsFinished && second.IsFinished); i++)
            engine.Iterate();
        Assert.Equal(FinishReason.Length, (await first.CollectAsync()).FinishReason);
        Assert.Equal(FinishReason.Length, (await second.CollectAsync()).FinishReason);
        // One place in the queue, given back once: the next request is taken, the one after refused.
        var third = engine.Submit(Greedy(Prompt(3, 63), 2));
        Assert.Throws<EngineOverloadedException>(() => engine.Submit(Greedy(Prompt(3, 64), 2)));
        for (var i = 0; i < 20 && !third.IsFinished; i++)
            engine.Iterate();
        Assert.Equal(FinishReason.Length, (await third.CollectAsync()).FinishReason);
        Assert.Equal(0, engine.Snapshot.UsedBlocks);
    }

    [Fact]
    public async Task Requests_admitted_when_the_model_fails_end_and_leave_nothing_held()
    {
        using var failing = new RecordingModel(
            new DecoderRunner(model.Folder, new RunnerOptions { MaxBatch = 4, MaxSequenceLength = 256, IntraOpThreads = 1 }), failAtStep: 3);
        await using var engine = new InferenceEngine(failing, model.Tokenizer, new EngineOptions { EosTokenIds = model.Folder.Config.Model.EosTokenId });
        var outputs = Enumerable.Range(0, 6).Select(i => engine.Submit(Greedy(Prompt(20, 70 + i), 40))).ToList();
        foreach (var output in outputs)
        {
            // Each ends with the engine's failure, not a wait forever and not an ordinary ending.
            var failed = await Assert.ThrowsAsync<EngineFaultedException>(() => output.CollectAsync());
            Assert.Equal("the device failed", failed.InnerException!.Message);
        }
        await engine.Stopped;
        Assert.Equal("the device failed", engine.Fault?.Message);
        var s = engine.Snapshot;
        Assert.Equal((0, 0, 0), (s.Running, s.Waiting, s.UsedBlocks));
        Assert.Throws<EngineStoppedException>(() => engine.Submit(Greedy(Prompt(4, 80), 2)));
    }
}
