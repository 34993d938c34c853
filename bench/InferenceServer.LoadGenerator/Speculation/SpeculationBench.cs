using System.Diagnostics;
using System.Globalization;
using System.Text;
using InferenceServer.Composition;
using InferenceServer.Engine;
using InferenceServer.Engine.Sampling;
using InferenceServer.Engine.Speculation;
using InferenceServer.LoadGenerator.Scenarios;
using InferenceServer.Model;
using InferenceServer.Server;

namespace InferenceServer.LoadGenerator.Speculation;

public sealed record SpeculationSettings
{
    public required string Model { get; init; }
    public required string Manifest { get; init; }
    public int Seed { get; init; } = 1;
    public int Sessions { get; init; } = 4;
    public int Prompts { get; init; } = 40;

    /// <summary>Keystrokes skipped between two prompts of one typing session (consecutive ones are nearly the same prompt).</summary>
    public int KeystrokeStride { get; init; } = 12;

    public int OutputTokens { get; init; } = 64;
    public IReadOnlyList<int> Drafts { get; init; } = [2, 4, 8];
    public int MaxNgram { get; init; } = 3;
    public int MinNgram { get; init; } = 1;

    /// <summary>The most drafts after a suffix shorter than <see cref="MaxNgram"/> matched (0: none); null: k.</summary>
    public int? ShortMatchDrafts { get; init; }
    public int Threads { get; init; }

    /// <summary>Rounds of the step cost measurement (every step length once per round).</summary>
    public int CostRounds { get; init; } = 300;

    /// <summary>Another folder of the same model whose one-token decode step is timed beside this one's.</summary>
    public string? BaselineModel { get; init; }

    public TypingOptions Typing { get; init; } = new();
}

/// <summary>
/// How much prompt-lookup speculative decoding could gain on the IDE workload, on the bare runner:
/// the IDE workload's fill-in-the-middle prompts (built by the front ends' own code), decoded
/// greedily once plainly and once per draft length k with <see cref="PromptLookupDrafter"/>
/// drafts checked by <see cref="DraftVerifier.VerifyGreedy"/> in one
/// <see cref="DecoderRunner.StepKeepingLogits"/> step. It reports the acceptance, the tokens each
/// step yields, whether the text is the same, the measured time of steps of 1 to k + 1 tokens,
/// the speed-up those costs predict and the speed-up measured.
/// </summary>
public static class SpeculationBench
{
    public static string Run(SpeculationSettings settings, TextWriter progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(progress);
        var maxDrafts = settings.Drafts.Max();
        var prompts = BuildPrompts(settings, progress);
        var folder = ModelFolder.Load(settings.Model);
        var eos = folder.Config.Model.EosTokenId;
        using var runner = new DecoderRunner(folder, new RunnerOptions { MaxBatch = 1, IntraOpThreads = settings.Threads });
        if (!runner.HasMultiPositionLogits)
            throw new InvalidOperationException($"{folder.Path}: the graph has no {DecoderRunner.LogitsToKeepInput} input, so drafts cannot be checked in one step (build-model --upgrade-graph)");
        var fitting = prompts.Where(p => p.Length + settings.OutputTokens + maxDrafts + 1 <= runner.Capacity).ToList();
        progress.WriteLine($"{fitting.Count} of {prompts.Count} prompts fit the context of {runner.Capacity} with {settings.OutputTokens} output tokens; prompt tokens: median {Median(fitting.Select(p => (double)p.Length)):F0}");

        var decoder = new Decoder(runner, eos, settings.OutputTokens, maxDrafts, settings.ShortMatchDrafts);
        // Warm up every shape once: ORT's first run of a shape is much slower than the rest.
        decoder.Plain(fitting[0]);
        foreach (var k in settings.Drafts)
        {
            using var warmUp = new PromptLookupDrafter(settings.MaxNgram, settings.MinNgram);
            decoder.Speculative(fitting[0], k, warmUp, new DraftCounts(k));
        }

        // Prompt after prompt, plain decoding and then each draft length, so that a machine whose
        // load drifts slows them alike.
        var plainTime = TimeSpan.Zero;
        var plainTokens = 0;
        var runs = settings.Drafts.Select(k => new DraftRun(k, new DraftCounts(k), new PromptLookupDrafter(settings.MaxNgram, settings.MinNgram, runner.Capacity))).ToList();
        try
        {
            foreach (var prompt in fitting)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var (plain, time) = decoder.Plain(prompt);
                plainTime += time;
                plainTokens += plain.Length;
                foreach (var run in runs)
                {
                    run.Drafter.Reset();
                    var (tokens, elapsed) = decoder.Speculative(prompt, run.K, run.Drafter, run.Counts);
                    run.Time += elapsed;
                    run.Ratios.Add((time.TotalSeconds / plain.Length) / (elapsed.TotalSeconds / tokens.Length));
                    if (tokens.AsSpan().SequenceEqual(plain))
                        run.Identical++;
                }
            }
        }
        finally
        {
            foreach (var run in runs)
                run.Drafter.Dispose();
        }
        progress.WriteLine($"plain greedy: {plainTokens} tokens in {plainTime.TotalMilliseconds:F0} ms of decode steps");
        foreach (var run in runs)
            progress.WriteLine($"k = {run.K}: {run.Counts.Tokens} tokens in {run.Time.TotalMilliseconds:F0} ms, acceptance {run.Counts.AcceptanceRate:P1}; by the length of the suffix matched: "
                + string.Join(", ", Enumerable.Range(1, settings.MaxNgram).Select(n => $"{n}: {(run.Counts.DraftedByMatch[n] == 0 ? 0 : (double)run.Counts.AcceptedByMatch[n] / run.Counts.DraftedByMatch[n]):P1} of {run.Counts.DraftedByMatch[n]}")));
        var results = runs.Select(r => (r.K, r.Counts, r.Time, r.Identical, Median(r.Ratios))).ToList();

        var costs = StepCosts(runner, fitting[fitting.Count / 2], maxDrafts + 1, settings.CostRounds);
        double? baselineCost = null, decodeCost = null;
        if (settings.BaselineModel is { } baseline)
        {
            using var other = new DecoderRunner(ModelFolder.Load(baseline), new RunnerOptions { MaxBatch = 1, IntraOpThreads = settings.Threads });
            (decodeCost, baselineCost) = CompareDecodeSteps(runner, other, fitting[fitting.Count / 2], settings.CostRounds * 4);
        }
        return Render(settings, settings.Model, fitting, plainTokens, plainTime, results, costs, (decodeCost, baselineCost));
    }

    private static List<int[]> BuildPrompts(SpeculationSettings settings, TextWriter progress)
    {
        var library = new SourceLibrary(SourceManifest.Load(settings.Manifest));
        // The front ends' prompt code, with the model's fill-in-the-middle template and order.
        var served = CompositionRoot.LoadModel(settings.Model, maxBatch: 1, contextLength: 0, intraOpThreads: 1, new EngineOptions());
        try
        {
            var prompts = new List<int[]>();
            var sessions = Enumerable.Range(0, settings.Sessions)
                .Select(s => new TypingSession(library, settings.Typing, settings.Seed, s).Keystrokes().GetEnumerator()).ToList();
            try
            {
                for (var turn = 0; prompts.Count < settings.Prompts; turn++)
                {
                    var keystrokes = sessions[turn % sessions.Count];
                    for (var skip = 0; skip < settings.KeystrokeStride; skip++)
                        keystrokes.MoveNext();
                    var keystroke = keystrokes.Current;
                    var request = GenerationRequests.Build(served, new RequestLimits(), new PromptInput.Infill(keystroke.Prefix, keystroke.Suffix),
                        SamplingParameters.Greedy, settings.OutputTokens, [IdeWorkload.BlankLine], [], priority: 0, requestId: null, defaultMaxTokens: settings.OutputTokens);
                    prompts.Add([.. request.PromptTokens]);
                }
            }
            finally
            {
                foreach (var keystrokes in sessions)
                    keystrokes.Dispose();
            }
            progress.WriteLine($"{prompts.Count} fill-in-the-middle prompts from {settings.Sessions} typing sessions (every {settings.KeystrokeStride}th keystroke)");
            return prompts;
        }
        finally
        {
            served.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }
    }

    private sealed record DraftRun(int K, DraftCounts Counts, PromptLookupDrafter Drafter)
    {
        /// <summary>Per prompt: plain decoding's time per token over this run's.</summary>
        public List<double> Ratios { get; } = [];

        public TimeSpan Time { get; set; }
        public int Identical { get; set; }
    }

    /// <summary>Per draft length: how many verification steps drafted that many tokens, and what they accepted.</summary>
    private sealed class DraftCounts(int maxDrafts)
    {
        public long[] StepsByDrafts { get; } = new long[maxDrafts + 1]; // [0]: steps without a draft
        public long[] DraftedByMatch { get; } = new long[PromptLookupDrafter.NgramLimit + 1];
        public long[] AcceptedByMatch { get; } = new long[PromptLookupDrafter.NgramLimit + 1];
        public long Drafted { get; set; }
        public long Accepted { get; set; }
        public long Tokens { get; set; }
        public long VerificationSteps => StepsByDrafts.Skip(1).Sum();
        public long Steps => StepsByDrafts.Sum();
        public double AcceptanceRate => Drafted == 0 ? 0 : (double)Accepted / Drafted;
    }

    /// <summary>Greedy decoding of one prompt in slot 0, plainly or with drafts, timing the decode steps (not the prefill).</summary>
    private sealed class Decoder(DecoderRunner runner, int[] eos, int outputTokens, int maxDrafts, int? shortMatchDrafts)
    {
        private readonly int[] _history = new int[runner.Capacity];
        private readonly int[] _draft = new int[maxDrafts];
        private readonly int[] _step = new int[maxDrafts + 1];
        private readonly int[] _chosen = new int[maxDrafts + 1];

        private int Prefill(int[] prompt)
        {
            prompt.CopyTo(_history, 0);
            var logits = runner.Step(0, [new SequenceStep(0, prompt.Length)], prompt);
            _history[prompt.Length] = ArgMax(logits);
            return prompt.Length + 1;
        }

        public (int[] Tokens, TimeSpan Time) Plain(int[] prompt)
        {
            var length = Prefill(prompt);
            var started = Stopwatch.GetTimestamp();
            while (!Done(prompt.Length, length))
            {
                var logits = runner.Step(0, [new SequenceStep(length - 1, 1)], _history.AsSpan(length - 1, 1));
                _history[length++] = ArgMax(logits);
            }
            return (Output(prompt.Length, length), Stopwatch.GetElapsedTime(started));
        }

        public (int[] Tokens, TimeSpan Time) Speculative(int[] prompt, int k, PromptLookupDrafter drafter, DraftCounts counts)
        {
            var length = Prefill(prompt);
            var started = Stopwatch.GetTimestamp();
            while (!Done(prompt.Length, length))
            {
                // Never draft past the output limit: the last token of a step is the model's own.
                var room = Math.Min(k, outputTokens - (length - prompt.Length) - 1);
                var drafted = 0;
                var matched = 0;
                if (room > 0)
                    drafted = drafter.Propose(_history.AsSpan(0, length), _draft.AsSpan(0, room), out matched);
                // Matches shorter than the longest looked up are right less often: draft less after them.
                if (matched < drafter.MaxNgram && shortMatchDrafts is { } limit && drafted > limit)
                    drafted = limit;
                counts.StepsByDrafts[drafted]++;
                if (drafted == 0)
                {
                    var logits = runner.Step(0, [new SequenceStep(length - 1, 1)], _history.AsSpan(length - 1, 1));
                    _history[length++] = ArgMax(logits);
                    continue;
                }
                _step[0] = _history[length - 1];
                _draft.AsSpan(0, drafted).CopyTo(_step.AsSpan(1));
                var verified = runner.StepKeepingLogits(0, new SequenceStep(length - 1, drafted + 1), _step.AsSpan(0, drafted + 1), drafted + 1);
                var chosen = DraftVerifier.VerifyGreedy(verified, runner.VocabSize, _draft.AsSpan(0, drafted), _chosen);
                counts.Drafted += drafted;
                counts.Accepted += chosen - 1;
                counts.DraftedByMatch[matched] += drafted;
                counts.AcceptedByMatch[matched] += chosen - 1;
                for (var i = 0; i < chosen && !Done(prompt.Length, length); i++)
                    _history[length++] = _chosen[i];
            }
            var tokens = Output(prompt.Length, length);
            counts.Tokens += tokens.Length;
            return (tokens, Stopwatch.GetElapsedTime(started));
        }

        private bool Done(int promptLength, int length) => length - promptLength >= outputTokens || eos.Contains(_history[length - 1]);

        private int[] Output(int promptLength, int length) => _history.AsSpan(promptLength, length - promptLength).ToArray();
    }

    private static int ArgMax(ReadOnlySpan<float> logits) => System.Numerics.Tensors.TensorPrimitives.IndexOfMax(logits);

    /// <summary>
    /// Median time of a step of n new tokens on a past (n = 1: the plain decode step; more: a
    /// verification step keeping n positions), measured in interleaved rounds so that a noisy
    /// machine slows every length alike. Index n holds n's cost in ms.
    /// </summary>
    private static double[] StepCosts(DecoderRunner runner, int[] prompt, int longest, int rounds)
    {
        runner.Step(0, [new SequenceStep(0, prompt.Length)], prompt);
        var times = Enumerable.Range(0, longest + 1).Select(_ => new List<double>(rounds)).ToArray();
        ReadOnlySpan<int> tokens = prompt.AsSpan(0, longest);
        for (var round = -3; round < rounds; round++)
        {
            for (var n = 1; n <= longest; n++)
            {
                var started = Stopwatch.GetTimestamp();
                if (n == 1)
                    runner.Step(0, [new SequenceStep(prompt.Length, 1)], tokens[..1]);
                else
                    runner.StepKeepingLogits(0, new SequenceStep(prompt.Length, n), tokens[..n], n);
                if (round >= 0)
                    times[n].Add(Stopwatch.GetElapsedTime(started).TotalMilliseconds);
            }
        }
        return times.Select(t => t.Count == 0 ? 0 : Median(t)).ToArray();
    }

    /// <summary>Median one-token decode step of two runners, alternating step by step (and which goes first).</summary>
    private static (double Cost, double Baseline) CompareDecodeSteps(DecoderRunner runner, DecoderRunner baseline, int[] prompt, int rounds)
    {
        runner.Step(0, [new SequenceStep(0, prompt.Length)], prompt);
        baseline.Step(0, [new SequenceStep(0, prompt.Length)], prompt);
        var ours = new List<double>(rounds);
        var theirs = new List<double>(rounds);
        for (var round = -10; round < rounds; round++)
        {
            var first = round % 2 == 0 ? runner : baseline;
            var second = round % 2 == 0 ? baseline : runner;
            var started = Stopwatch.GetTimestamp();
            first.Step(0, [new SequenceStep(prompt.Length, 1)], prompt.AsSpan(0, 1));
            var middle = Stopwatch.GetTimestamp();
            second.Step(0, [new SequenceStep(prompt.Length, 1)], prompt.AsSpan(0, 1));
            var end = Stopwatch.GetTimestamp();
            if (round < 0)
                continue;
            (round % 2 == 0 ? ours : theirs).Add(Stopwatch.GetElapsedTime(started, middle).TotalMilliseconds);
            (round % 2 == 0 ? theirs : ours).Add(Stopwatch.GetElapsedTime(middle, end).TotalMilliseconds);
        }
        return (Median(ours), Median(theirs));
    }

    private static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length == 0 ? 0 : sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }

    private static string Render(SpeculationSettings settings, string modelPath, List<int[]> prompts, int plainTokens, TimeSpan plainTime,
        List<(int K, DraftCounts Counts, TimeSpan Time, int Identical, double MedianRatio)> results, double[] costs, (double? Ours, double? Baseline) decodeSteps)
    {
        var text = new StringBuilder();
        var c = CultureInfo.InvariantCulture;
        text.AppendLine("# Prompt-lookup speculative decoding on the IDE workload (bare runner, greedy)");
        text.AppendLine();
        text.AppendLine(c, $"Model {modelPath}; {prompts.Count} fill-in-the-middle prompts of the IDE workload (seed {settings.Seed}, {settings.Sessions} typing sessions, every {settings.KeystrokeStride}th keystroke; prompt tokens median {Median(prompts.Select(p => (double)p.Length)):F0}); {settings.OutputTokens} tokens each (or to the end of text); drafts from the last {settings.MaxNgram} down to {settings.MinNgram} tokens{(settings.ShortMatchDrafts is { } limit ? $", at most {limit} after a match shorter than {settings.MaxNgram}" : "")}.");
        text.AppendLine();
        text.AppendLine(c, $"Plain greedy decoding: {plainTokens} tokens, {plainTokens / plainTime.TotalSeconds:F0} tokens/s over the decode steps.");
        text.AppendLine();
        text.AppendLine("| k | steps with a draft | drafted | acceptance | tokens per verification step | tokens per step | same text | predicted speed-up | measured tokens/s | measured speed-up | median per prompt |");
        text.AppendLine("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var (k, counts, time, identical, medianRatio) in results)
        {
            // What the steps would cost at the measured price of each length.
            var cost = counts.StepsByDrafts[0] * costs[1];
            for (var d = 1; d <= k; d++)
                cost += counts.StepsByDrafts[d] * costs[d + 1];
            var predicted = counts.Tokens * costs[1] / cost;
            var perVerification = counts.VerificationSteps == 0 ? 0 : (double)(counts.Accepted + counts.VerificationSteps) / counts.VerificationSteps;
            var tokensPerSecond = counts.Tokens / time.TotalSeconds;
            text.AppendLine(c, $"| {k} | {(double)counts.VerificationSteps / counts.Steps:P0} | {counts.Drafted} | {counts.AcceptanceRate:P1} | {perVerification:F2} | {(double)counts.Tokens / counts.Steps:F2} | {identical} of {prompts.Count} | {predicted:F2}x | {tokensPerSecond:F0} | {tokensPerSecond / (plainTokens / plainTime.TotalSeconds):F2}x | {medianRatio:F2}x |");
        }
        text.AppendLine();
        text.AppendLine(c, $"Step cost on this machine (median of {settings.CostRounds} interleaved rounds, one row on a past of {prompts[prompts.Count / 2].Length} tokens):");
        text.AppendLine();
        text.AppendLine("| new tokens | ms | vs 1 |");
        text.AppendLine("|---:|---:|---:|");
        for (var n = 1; n < costs.Length; n++)
            text.AppendLine(c, $"| {n} | {costs[n]:F3} | {costs[n] / costs[1]:F2} |");
        if (decodeSteps is { Ours: { } ours, Baseline: { } baseline })
        {
            text.AppendLine();
            text.AppendLine(c, $"One-token decode step, alternating with {settings.BaselineModel} ({settings.CostRounds * 4} pairs): {ours:F3} ms here, {baseline:F3} ms there ({(ours / baseline - 1):+0.0%;-0.0%}).");
        }
        text.AppendLine();
        text.AppendLine("Predicted speed-up: the plain decode time of the same tokens over the time of the steps speculation took, each step at the measured (median) cost of its length. Measured: all decode steps' wall time, which on a busy machine carries every pause the scheduler imposes; median per prompt: the median over prompts of plain decoding's time per token over speculation's, decoded one after the other. Same text: prompts whose speculative output equals plain greedy decoding's token for token.");
        return text.ToString();
    }
}
