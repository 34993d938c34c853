using System.Collections.Concurrent;
using System.Diagnostics;
using InferenceServer.LoadGenerator.Measurement;
using InferenceServer.LoadGenerator.Targets;
using InferenceServer.LoadGenerator.Scenarios;

namespace InferenceServer.LoadGenerator.Tests;

public sealed class TypingSessionTests : IDisposable
{
    private readonly SourceFiles _files = new();
    private static readonly TypingOptions Options = new() { PrefixChars = 300, SuffixChars = 120, TypedChars = 60 };

    [Fact]
    public void The_same_seed_and_session_type_the_same_keystrokes()
    {
        var a = new TypingSession(_files.Library, Options, seed: 3, session: 0).Keystrokes().Take(300).ToArray();
        var b = new TypingSession(_files.Library, Options, seed: 3, session: 0).Keystrokes().Take(300).ToArray();
        var otherSession = new TypingSession(_files.Library, Options, seed: 3, session: 1).Keystrokes().Take(300).ToArray();
        var otherSeed = new TypingSession(_files.Library, Options, seed: 4, session: 0).Keystrokes().Take(300).ToArray();
        Assert.Equal(a, b);
        Assert.NotEqual(a, otherSession);
        Assert.NotEqual(a, otherSeed);
    }

    [Fact]
    public void Prefixes_grow_by_the_typed_text_while_the_suffix_stays_the_same()
    {
        var keystrokes = new TypingSession(_files.Library, Options, seed: 11, session: 2).Keystrokes().Take(400).ToArray();
        var runs = keystrokes.GroupBy(k => k.Run).ToArray();
        Assert.True(runs.Length >= 3, "several typing runs");
        foreach (var run in runs.SkipLast(1))
        {
            var strokes = run.ToArray();
            var text = _files.Library.Manifest.Files.Select((_, i) => _files.Library.Document(i)!).Single(d => d.Path == strokes[0].File).Text;
            for (var i = 1; i < strokes.Length; i++)
            {
                var (before, after) = (strokes[i - 1], strokes[i]);
                Assert.StartsWith(before.Prefix, after.Prefix, StringComparison.Ordinal);
                var typed = after.Prefix[before.Prefix.Length..];
                // One character, or a line break with the indentation the editor adds after it.
                Assert.True(typed.Length == 1 || (typed[0] == '\n' && typed[1..].All(c => c is ' ' or '\t')), $"typed '{typed}'");
                Assert.Equal(before.Suffix, after.Suffix);
                Assert.Equal(after.Cursor - before.Cursor, typed.Length);
            }
            var last = strokes[^1];
            // The prefix is the file up to the cursor, from a line start; the suffix follows the typed text.
            Assert.EndsWith(last.Prefix, text[..last.Cursor], StringComparison.Ordinal);
            var prefixStart = last.Cursor - last.Prefix.Length;
            Assert.True(prefixStart == 0 || text[prefixStart - 1] == '\n');
            Assert.True(strokes[0].Prefix.Length <= Options.PrefixChars + 1);
            Assert.Equal(last.Suffix, text.Substring(last.Cursor, last.Suffix.Length));
            Assert.True(last.Suffix.Length <= Options.SuffixChars);
            Assert.All(strokes, k => Assert.InRange(k.MaxTokens, 16, 64));
            Assert.All(strokes, k => Assert.True(k.Delay > TimeSpan.Zero));
        }
    }

    [Fact]
    public void Typing_starts_at_function_bodies()
    {
        var document = _files.Library.Document(0)!;
        // 12 functions and 2 methods; typing starts after the body's indentation, where the editor put the cursor.
        Assert.Equal(14, document.FunctionBodyStarts.Count);
        Assert.All(document.FunctionBodyStarts, start => Assert.True(document.Text[start - 1] == ' ' && document.Text[start] != ' '));
        var first = new TypingSession(_files.Library, Options, seed: 1, session: 0).Keystrokes().First();
        var doc = _files.Library.Manifest.Files.Select((_, i) => _files.Library.Document(i)!).Single(d => d.Path == first.File);
        Assert.Contains(first.Cursor - 1, doc.FunctionBodyStarts);
    }

    [Fact]
    public async Task Each_keystroke_cancels_the_previous_request_if_it_is_still_running()
    {
        // Requests take 150 ms; keystrokes come every few milliseconds, so nearly every one is cancelled by the next.
        await using var target = new SlowTarget(TimeSpan.FromMilliseconds(150));
        var options = new IdeOptions
        {
            Sessions = 1,
            Seed = 5,
            // Bounded by count, not time, so a busy machine changes only how long it takes.
            MaxRequests = 60,
            Duration = TimeSpan.FromSeconds(60),
            FillInTheMiddle = true,
            Typing = Options with { KeystrokeMs = 4, TypedChars = 40 },
        };
        var run = await IdeWorkload.RunAsync("ide", target, _files.Library, options, counters: null, SilentProgress.Instance, CancellationToken.None);

        var calls = target.Calls.ToArray();
        Assert.Equal(60, calls.Length);
        var cancelled = 0;
        for (var i = 1; i < calls.Length; i++)
        {
            var (previous, next) = (calls[i - 1], calls[i]);
            var sameRun = previous.Request.Suffix == next.Request.Suffix && next.Request.Prompt.Length > previous.Request.Prompt.Length
                && next.Request.Prompt.StartsWith(previous.Request.Prompt, StringComparison.Ordinal);
            if (!sameRun)
            {
                // A new place: the last suggestion of the previous run was waited for, not cancelled.
                Assert.False(previous.Cancelled, "the last request of a typing run completes");
                continue;
            }
            if (previous.FinishedBeforeCall <= next.Index)
                continue;
            // Still running when the next keystroke came: cancelled before the next request was sent.
            Assert.True(previous.Cancelled, $"request {i - 1} was still running at keystroke {i} and was not cancelled");
            Assert.Equal(next.Index, previous.CancelledBeforeCall);
            cancelled++;
        }
        Assert.True(cancelled > 0);
        Assert.All(calls, c => Assert.Equal(["\n\n"], c.Request.Stop));
        var level = Assert.Single(run.Levels);
        Assert.Equal(calls.Length, level.Requests);
        Assert.Equal(calls.Count(c => c.Cancelled), level.Cancelled);
        Assert.Equal(0, level.Failed);
        Assert.True(run.FillInTheMiddle);
    }

    [Fact]
    public async Task The_probe_falls_back_to_plain_prompts_only_when_a_suffix_is_refused()
    {
        Assert.True(await IdeWorkload.SupportsFillInTheMiddleAsync(new ScriptedTarget(null), CancellationToken.None));
        Assert.False(await IdeWorkload.SupportsFillInTheMiddleAsync(new ScriptedTarget("http:400"), CancellationToken.None));
        Assert.False(await IdeWorkload.SupportsFillInTheMiddleAsync(new ScriptedTarget("grpc:INVALID_ARGUMENT"), CancellationToken.None));
        await Assert.ThrowsAsync<InvalidOperationException>(() => IdeWorkload.SupportsFillInTheMiddleAsync(new ScriptedTarget("http:503"), CancellationToken.None));
    }

    public void Dispose() => _files.Dispose();

    /// <summary>A request as the slow target saw it: its order, and the count of calls made when it was cancelled or finished.</summary>
    private sealed class Call(int index, LoadRequest request)
    {
        public int Index { get; } = index;
        public LoadRequest Request { get; } = request;
        public bool Cancelled { get; set; }
        public int CancelledBeforeCall { get; set; } = -1;
        public int FinishedBeforeCall { get; set; } = int.MaxValue;
    }

    /// <summary>Takes <paramref name="delay"/> per request unless cancelled; records every call in order.</summary>
    private sealed class SlowTarget(TimeSpan delay) : ILoadTarget
    {
        private int _calls;

        public ConcurrentQueue<Call> Calls { get; } = new();
        public string Kind => "fake";
        public string Address => "fake://slow";

        public async Task<RequestRecord> SendAsync(LoadRequest request, CancellationToken cancellationToken)
        {
            var call = new Call(Interlocked.Increment(ref _calls) - 1, request);
            Calls.Enqueue(call);
            var started = Stopwatch.GetTimestamp();
            using var registration = cancellationToken.Register(() => call.CancelledBeforeCall = Volatile.Read(ref _calls));
            try
            {
                await Task.Delay(delay, cancellationToken);
            }
            catch (OperationCanceledException)
            {
                call.Cancelled = true;
                return new RequestRecord { Outcome = RequestOutcome.Cancelled, EndMs = Stopwatch.GetElapsedTime(started).TotalMilliseconds };
            }
            call.FinishedBeforeCall = Volatile.Read(ref _calls);
            var elapsed = Stopwatch.GetElapsedTime(started).TotalMilliseconds;
            return new RequestRecord
            {
                Outcome = RequestOutcome.Completed, TimeToFirstTokenMs = elapsed, LastTokenMs = elapsed, EndMs = elapsed,
                OutputTokens = 1, FirstEventTokens = 1, PromptTokens = 10, CachedPromptTokens = 8,
            };
        }

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }

    /// <summary>Answers every request at once, completed or failed with the given key.</summary>
    private sealed class ScriptedTarget(string? errorKey) : ILoadTarget
    {
        public string Kind => "fake";
        public string Address => "fake://scripted";

        public Task<RequestRecord> SendAsync(LoadRequest request, CancellationToken cancellationToken) => Task.FromResult(errorKey is null
            ? new RequestRecord { Outcome = RequestOutcome.Completed, OutputTokens = 1 }
            : new RequestRecord { Outcome = RequestOutcome.Failed, ErrorKey = errorKey, ErrorMessage = "refused" });

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }
}
