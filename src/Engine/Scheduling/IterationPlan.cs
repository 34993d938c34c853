namespace InferenceServer.Engine;

/// <summary>
/// One row of an iteration: <see cref="Sequence"/> has KV for <see cref="PastLength"/> tokens and
/// this iteration appends <see cref="TokenCount"/> more, found in the plan's packed token array at
/// <see cref="TokenOffset"/>. The last <see cref="LogitsCount"/> of them need logits: 1 where the
/// row ends at the sequence's newest token (a decode, or a prompt's last chunk), 0 for a chunk short
/// of the prompt's end. A count, not a flag: a row that verifies several drafted tokens in one step
/// needs logits for each of them.
/// </summary>
internal readonly record struct PlanRow(Sequence Sequence, int PastLength, int TokenOffset, int TokenCount, int LogitsCount, bool Prefill);

/// <summary>A prefix of KV to copy from one dense slot to another before the iteration's runs (a prompt sharing another slot's prefix).</summary>
internal readonly record struct KvCopy(int FromSlot, int ToSlot, int Length);

/// <summary>
/// What the scheduler decided for one iteration, and all the executor needs to run it: the rows
/// (decodes first, then prefill chunks), their new tokens packed in row order, and KV copies to do
/// first; plus what the engine settles afterwards: sequences admitted for the first time,
/// preempted, or dropped because their consumer gave up. Allocated once and reused every iteration.
/// </summary>
internal sealed class IterationPlan
{
    private readonly PlanRow[] _rows;
    private readonly int[] _tokens;
    private int _rowCount, _tokenCount;

    public IterationPlan(int maxRows, int maxTokens)
    {
        _rows = new PlanRow[maxRows];
        _tokens = new int[maxTokens];
    }

    public ReadOnlySpan<PlanRow> Rows => _rows.AsSpan(0, _rowCount);

    /// <summary>Every row's new tokens, back to back in row order.</summary>
    public ReadOnlySpan<int> Tokens => _tokens.AsSpan(0, _tokenCount);

    public int MaxRows => _rows.Length;
    public int MaxTokens => _tokens.Length;
    public int TokenCount => _tokenCount;

    /// <summary>New tokens of rows that compute a prompt (or recompute one after a preemption), not decodes.</summary>
    public int PrefillTokens { get; private set; }

    /// <summary>Some row that needs logits needs the whole row, not only what a step reduces on the device (see <see cref="Sequence.NeedsLogitsRow"/>).</summary>
    public bool NeedsLogitsRows { get; set; }

    public List<KvCopy> Copies { get; } = new(8);

    /// <summary>Sequences admitted for the first time (not readmissions after a preemption).</summary>
    public List<Sequence> Admitted { get; } = new(16);
    public List<Sequence> Preempted { get; } = new(16);

    /// <summary>Cancelled sequences taken off the running list (their KV released) or out of the waiting queue.</summary>
    public List<Sequence> DroppedRunning { get; } = new(16);
    public List<Sequence> DroppedWaiting { get; } = new(16);

    /// <summary>
    /// The plan is one prompt alone in the engine, prefilled without the time budget: the engine
    /// may end its run early (<see cref="EngineOptions.InterruptibleLonePrompts"/>).
    /// </summary>
    public bool Interruptible { get; set; }

    /// <summary>What the plan's prefill is expected to take, in seconds (0: not known yet).</summary>
    public double PredictedSeconds { get; set; }

    public void Clear()
    {
        Array.Clear(_rows, 0, _rowCount); // no sequence stays reachable from a reused plan
        _rowCount = _tokenCount = PrefillTokens = 0;
        NeedsLogitsRows = false;
        Interruptible = false;
        PredictedSeconds = 0;
        Copies.Clear();
        Admitted.Clear();
        Preempted.Clear();
        DroppedRunning.Clear();
        DroppedWaiting.Clear();
    }

    /// <summary>Adds a row for the sequence's tokens from its <see cref="Sequence.Computed"/> on.</summary>
    public void AddRow(Sequence sequence, int count, bool prefill)
    {
        var past = sequence.Computed;
        sequence.Tokens.AsSpan(past, count).CopyTo(_tokens.AsSpan(_tokenCount));
        var logits = past + count == sequence.Length ? 1 : 0;
        _rows[_rowCount++] = new PlanRow(sequence, past, _tokenCount, count, logits, prefill);
        _tokenCount += count;
        if (prefill)
            PrefillTokens += count;
    }

    /// <summary>
    /// Adds a decode row that also carries drafted tokens: the sequence's newest token, then
    /// <paramref name="draft"/>, with logits for each of them (the token after the newest, and
    /// after each draft) so one step checks them all.
    /// </summary>
    public void AddDraftRow(Sequence sequence, ReadOnlySpan<int> draft)
    {
        var past = sequence.Computed;
        _tokens[_tokenCount] = sequence.Tokens[past];
        draft.CopyTo(_tokens.AsSpan(_tokenCount + 1));
        var count = draft.Length + 1;
        _rows[_rowCount++] = new PlanRow(sequence, past, _tokenCount, count, count, Prefill: false);
        _tokenCount += count;
    }
}
