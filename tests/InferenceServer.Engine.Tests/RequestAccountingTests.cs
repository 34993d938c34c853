using InferenceServer.Model;
using static InferenceServer.Engine.Tests.EngineFixture;

namespace InferenceServer.Engine.Tests;

/// <summary>Every way out of the engine gives back what the request took: its queue place and its KV blocks.</summary>
public sealed class RequestAccountingTests(EngineFixture model) : IClassFixture<EngineFixture>
{
    [Fact]
    public async Task Requests_refused_at_submission_take_no_place_in_the_queue()
    {
        await using var test = new EngineUnderTest(model, slots: 1, options: new EngineOptions { MaxWaitingRequests = 2 }, stepDelay: TimeSpan.FromMilliseconds(1));
        var prompt = Prompt(8, 60);
        for (var i = 0; i < 300; i++)
        {
            // Near int.MaxValue, prompt + max_tokens once wrapped around to a negative total and passed.
            var refused = Assert.Throws<RequestValidationException>(() => test.Engine.Submit(Greedy(prompt, int.MaxValue - i)));
            Assert.Contains("context length", refused.Message, StringComparison.Ordinal);
        }
        Assert.Throws<RequestValidationException>(() => test.Engine.Submit(Greedy(prompt, 4) with { StopTokenIds = [-1] }));
        Assert.Equal(0, test.Engine.Snapshot.Waiting);

        // The queue still holds its two: one request runs (held inside a step), two wait, the next is refused.
        var hold = test.Recorder!.HoldStepAsync(1);
        using var cancel = new CancellationTokenSource();
        var outputs = new List<GenerationOutput> { test.Engine.Submit(Greedy(prompt, 50), cancel.Token) };
        using (await hold)
        {
            outputs.Add(test.Engine.Submit(Greedy(prompt, 2), cancel.Token));
            outputs.Add(test.Engine.Submit(Greedy(prompt, 2), cancel.Token));
            Assert.Throws<EngineOverloadedException>(() => test.Engine.Submit(Greedy(prompt, 2)));
            await cancel.CancelAsync();
        }
        // The engine's own final events: each request has given its place back by then.
        foreach (var output in outputs)
            Assert.Equal(FinishReason.Cancelled, (await output.CollectAsync()).FinishReason);
        await test.AssertIdleAsync();
        Assert.Equal(FinishReason.Length, (await test.Engine.Submit(Greedy(prompt, 2)).CollectAsync()).FinishReason);
        await test.AssertIdleAsync();
    }

    [Fact]
    public async Task Requests_admitted_when_the_model_fails_end_and_leave_nothing_held()
    {
        using var failing = new FailingModel(
            new DecoderRunner(model.Folder, new RunnerOptions { MaxBatch = 4, MaxSequenceLength = 256, IntraOpThreads = 1 }), failAtStep: 3);
        await using var engine = new InferenceEngine(failing, model.Tokenizer, new EngineOptions { EosTokenIds = model.Folder.Config.Model.EosTokenId });
        var outputs = Enumerable.Range(0, 6).Select(i => engine.Submit(Greedy(Prompt(20, 70 + i), 40))).ToList();
        foreach (var output in outputs)
        {
            // Each ends with the engine's failure, not a wait forever and not an ordinary ending.
            var failed = await Assert.ThrowsAsync<EngineFaultedException>(() => output.CollectAsync().WaitAsync(TimeSpan.FromSeconds(30)));
            Assert.Equal("the device failed", failed.InnerException!.Message);
        }
        await engine.Stopped;
        Assert.Equal("the device failed", engine.Fault?.Message);
        var s = engine.Snapshot;
        Assert.Equal((0, 0, 0), (s.Running, s.Waiting, s.UsedBlocks));
        Assert.Throws<EngineStoppedException>(() => engine.Submit(Greedy(Prompt(4, 80), 2)));
    }

    /// <summary>The real model until one step, which throws as a failing device would.</summary>
    private sealed class FailingModel(DecoderRunner runner, int failAtStep) : IDecoderModel, IDisposable
    {
        private int _steps;

        public int Slots => runner.Slots;
        public int Capacity => runner.Capacity;
        public int VocabSize => runner.VocabSize;
        public long KvBytesPerToken => runner.KvBytesPerToken;

        public ReadOnlySpan<float> Step(int firstSlot, scoped ReadOnlySpan<SequenceStep> rows, scoped ReadOnlySpan<int> tokens) =>
            ++_steps == failAtStep ? throw new InvalidOperationException("the device failed") : runner.Step(firstSlot, rows, tokens);

        public void CopyPrefix(int fromSlot, int toSlot, int length) => runner.CopyPrefix(fromSlot, toSlot, length);

        public void Dispose() => runner.Dispose();
    }
}
