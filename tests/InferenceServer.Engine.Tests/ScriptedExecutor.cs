using InferenceServer.Engine.Kv;
using InferenceServer.Engine.Sampling;

namespace InferenceServer.Engine.Tests;

/// <summary>One row of a plan as the executor saw it.</summary>
internal readonly record struct RowRecord(long Id, int Past, int Count, int Logits, bool Prefill);

/// <summary>
/// An executor without a model, for single-threaded tests of the scheduler and the engine: it
/// records every plan's rows, answers each row that needs logits with a row whose only finite
/// logit is <see cref="Next"/> of the row's last token, and reports the step times a test sets, as
/// if it had measured them.
/// </summary>
internal sealed class ScriptedExecutor(int vocabSize, int maxStepTokens = 512, int reducedTopK = 0) : IStepExecutor
{
    private readonly float[] _logits = new float[64 * vocabSize];
    private readonly List<RowRecord[]> _plans = [];

    public int VocabSize => vocabSize;
    public int MaxStepTokens => maxStepTokens;
    public bool DecodesRunApart => false;
    public int ReducedTopK => reducedTopK;

    /// <summary>Whether plans are recorded (recording allocates; allocation tests turn it off).</summary>
    public bool Record { get; set; } = true;

    /// <summary>What each prompt token and each decode-only step "took".</summary>
    public TimeSpan PrefillCostPerToken { get; set; }
    public TimeSpan DecodeCost { get; set; }

    /// <summary>The executed plans that had rows, in order (any thread).</summary>
    public IReadOnlyList<RowRecord[]> Plans
    {
        get
        {
            lock (_plans)
                return [.. _plans];
        }
    }

    /// <summary>The token the scripted model predicts after <paramref name="token"/>.</summary>
    public int Next(int token) => (token * 3 + 1) % vocabSize;

    public StepResult Execute(IterationPlan plan)
    {
        var rows = plan.Rows;
        if (rows.Length == 0)
            return default;
        var record = Record ? new RowRecord[rows.Length] : null;
        for (var r = 0; r < rows.Length; r++)
        {
            var row = rows[r];
            record?[r] = new RowRecord(row.Sequence.Id, row.PastLength, row.TokenCount, row.LogitsCount, row.Prefill);
            if (row.LogitsCount == 0)
                continue;
            var logits = _logits.AsSpan(r * vocabSize, vocabSize);
            logits.Fill(float.NegativeInfinity);
            logits[Next(plan.Tokens[row.TokenOffset + row.TokenCount - 1])] = 0;
        }
        if (record is not null)
        {
            lock (_plans)
                _plans.Add(record);
        }
        var decode = plan.PrefillTokens == 0 ? DecodeCost : TimeSpan.Zero;
        return new StepResult(vocabSize, _logits, default, default, new StepTimes(plan.PrefillTokens, PrefillCostPerToken * plan.PrefillTokens, decode));
    }
}

/// <summary>Sequences and layouts for tests that drive a <see cref="Scheduler"/> by hand.</summary>
internal static class SchedulerParts
{
    public const int BlockTokens = 16;

    /// <summary>A dense layout of <paramref name="slots"/> slots, or a paged pool, with a budget of <paramref name="blocks"/> blocks of 16 tokens.</summary>
    public static KvLayout Layout(string kind, int blocks, int sequences = 8, int capacity = 256) => kind switch
    {
        "dense" => new DenseSlotLayout(sequences, capacity, BlockTokens, kvCacheBytes: blocks * BlockTokens, kvBytesPerToken: 1),
        "paged" => new PagedBlockLayout(blocks, BlockTokens, capacity, sequences, (capacity + BlockTokens - 1) / BlockTokens),
        _ => throw new ArgumentException(kind, nameof(kind)),
    };

    private static long _ids;

    public static Sequence Sequence(Tokenizer.Tokenizer tokenizer, int[] prompt, int maxTokens = 50, int priority = 0, SamplingParameters? sampling = null, int adapter = 0)
    {
        var request = new GenerationRequest
        {
            PromptTokens = prompt, MaxTokens = maxTokens, IgnoreEos = true, Priority = priority, Sampling = sampling ?? SamplingParameters.Greedy, AdapterId = adapter,
        };
        return new Sequence(Interlocked.Increment(ref _ids), request, prompt, [], new Sampler(request.Sampling, tokenizer.VocabSize, prompt),
            tokenizer.CreateStreamingDetokenizer(skipSpecialTokens: true), new GenerationOutput(maxTokens, 0), 0, default);
    }

    /// <summary>What the engine does with a plan, reduced to what scheduling sees: each row that ends at its sequence's newest token gets one more token; a sequence done finishes.</summary>
    public static void Apply(Scheduler scheduler, IterationPlan plan)
    {
        foreach (var row in plan.Rows)
        {
            if (row.LogitsCount == 0)
                continue;
            var sequence = row.Sequence;
            sequence.Tokens[sequence.Length++] = 7;
            if (sequence.Generated >= sequence.Request.MaxTokens)
                scheduler.Finish(sequence);
        }
    }
}

/// <summary>Engines over a <see cref="ScriptedExecutor"/> and either layout's bookkeeping (dense slots unless told).</summary>
internal static class ScriptedEngines
{
    public static InferenceEngine Create(Tokenizer.Tokenizer tokenizer, ScriptedExecutor executor, EngineOptions? options = null, bool startLoop = false, int slots = 8, int capacity = 256, string layout = "dense")
    {
        var engineOptions = options ?? new EngineOptions();
        var blockTokens = engineOptions.KvBlockTokens;
        KvLayout kv = layout == "paged"
            ? new PagedBlockLayout(slots * ((capacity + blockTokens - 1) / blockTokens), blockTokens, capacity, slots, (capacity + blockTokens - 1) / blockTokens)
            : new DenseSlotLayout(slots, capacity, blockTokens, engineOptions.KvCacheBytes, kvBytesPerToken: 1);
        var scheduler = new Scheduler(kv, engineOptions, executor.MaxStepTokens, executor.ReducedTopK);
        return new InferenceEngine((scheduler, executor), tokenizer, engineOptions, startLoop);
    }
}
