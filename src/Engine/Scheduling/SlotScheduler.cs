using InferenceServer.Engine.Kv;
using InferenceServer.Model;

namespace InferenceServer.Engine;

/// <summary>
/// The dense CPU path: KV in the graph's slots, one per running sequence (<see cref="KvSlots"/>
/// counts their blocks and keeps finished slots' KV for prefix reuse). An iteration runs prefill
/// chunks up to the token budget (fresh prompts in adjacent slots together, a chunk on top of a
/// past alone, as GroupQueryAttention on the CPU requires), then every decoding sequence in one
/// batched step.
/// </summary>
internal sealed class SlotScheduler : KvScheduler
{
    private readonly InferenceEngine _engine;
    private readonly IDecoderModel _model;
    private readonly EngineOptions _options;
    private readonly KvSlots _kv;
    private readonly Sequence?[] _bySlot;
    private readonly StepCost _cost;

    // Per-iteration scratch, sized once.
    private readonly SequenceStep[] _rows;
    private readonly int[] _rowTokens;

    public SlotScheduler(InferenceEngine engine, IDecoderModel model, EngineOptions options)
    {
        _engine = engine;
        _model = model;
        _options = options;
        var physicalBlocks = model.Slots * ((model.Capacity + options.KvBlockTokens - 1) / options.KvBlockTokens);
        var budgetBlocks = options.KvCacheBytes > 0
            ? (int)Math.Min(physicalBlocks, options.KvCacheBytes / (model.KvBytesPerToken * options.KvBlockTokens))
            : physicalBlocks;
        if (budgetBlocks < 1)
            throw new ArgumentException($"the KV budget of {options.KvCacheBytes} bytes holds less than one block of {options.KvBlockTokens} tokens", nameof(options));
        _kv = new KvSlots(model.Slots, model.Capacity, options.KvBlockTokens, budgetBlocks);
        _bySlot = new Sequence?[model.Slots];
        _cost = new StepCost(options.IterationTimeBudget);
        _rows = new SequenceStep[model.Slots];
        _rowTokens = new int[Math.Max(model.Slots, options.MaxBatchTokens)];
    }

    public override int VocabSize => _model.VocabSize;
    public override int Capacity => _model.Capacity;
    public override int TotalBlocks => _kv.TotalBlocks;
    public override int BlockTokens => _kv.BlockTokens;
    public override int UsedBlocks => _kv.UsedBlocks;
    public override int CachedBlocks => _kv.CachedBlocks;

    public override void Release(Sequence sequence)
    {
        if (sequence.Slot < 0)
            return;
        _kv.Release(sequence.Slot);
        _bySlot[sequence.Slot] = null;
        sequence.Slot = -1;
    }

    public override void Run()
    {
        RunPrefills();
        RunDecodes();
    }

    public override bool TryAdmit(Sequence sequence)
    {
        var tokens = sequence.Tokens.AsSpan(0, sequence.Length);
        var (source, common) = _kv.LongestPrefix(tokens);
        // Keep at least the last token to compute: its logits give the next token.
        var reuse = Math.Min(common, sequence.Length - 1);
        var takeOver = reuse > 0 && !_kv.IsOwned(source);
        var slot = takeOver ? source : _kv.FindFreeSlot(keep: reuse > 0 ? source : -1);
        if (slot < 0)
            return false;

        // Blocks for its tokens so far plus the next one. Taking a cached slot frees that slot's
        // blocks; beyond that, evict other cached KV (never the prefix being reused).
        var needed = _kv.BlocksFor(sequence.Length + 1);
        while (_kv.FreeBlocks + (_kv.IsCached(slot) ? _kv.BlocksFor(_kv.Length(slot)) : 0) < needed)
        {
            if (!_kv.EvictOne(keep: reuse > 0 ? source : -1))
                return false;
        }

        if (!takeOver && reuse > 0)
        {
            _model.CopyPrefix(source, slot, reuse);
            _kv.CopyTokens(source, slot, reuse);
        }
        _kv.Take(slot, reuse, sequence.Length + 1);
        sequence.Slot = slot;
        sequence.Computed = reuse;
        _bySlot[slot] = sequence;
        return true;
    }

    // Each decoding sequence writes one more position; crossing into a new block needs a free
    // one: evict cached KV, else preempt the newest running sequence (possibly this one).
    public override void ReserveDecodeBlocks()
    {
        for (var i = 0; i < _engine.Running.Count; i++)
        {
            var sequence = _engine.Running[i];
            var needed = sequence.Computed + 1;
            if (!sequence.IsDecoding || _kv.BlocksFor(needed) <= _kv.OwnedBlocks(sequence.Slot))
                continue;
            var preempted = false;
            while (_kv.FreeBlocks < 1 && !_kv.EvictOne(keep: -1))
            {
                var victim = _engine.Newest();
                _engine.Preempt(victim);
                preempted = true;
                if (victim == sequence)
                    break;
            }
            if (sequence.Slot >= 0)
                _kv.Reserve(sequence.Slot, needed);
            if (preempted)
                i = _engine.Running.IndexOf(sequence) is var at && at >= 0 ? at : i - 1; // the list shrank
        }
    }

    private void RunPrefills()
    {
        var budget = _options.MaxBatchTokens;
        var decodes = false;
        foreach (var sequence in _engine.Running)
        {
            if (sequence.IsDecoding)
            {
                budget--;
                decodes = true;
            }
        }
        budget = Math.Min(budget, _cost.PrefillTokens(decodes));

        for (var i = 0; i < _engine.Running.Count && budget > 0; i++)
        {
            var sequence = _engine.Running[i];
            if (sequence.IsDecoding || sequence.Output.Abandoned)
                continue;
            if (sequence.Computed == 0)
            {
                budget -= PrefillFreshGroup(i, budget);
                continue;
            }
            var chunk = Math.Min(Math.Min(sequence.Length - sequence.Computed, _options.PrefillChunkTokens), budget);
            _rows[0] = new SequenceStep(sequence.Computed, chunk);
            var started = System.Diagnostics.Stopwatch.GetTimestamp();
            var logits = _model.Step(sequence.Slot, _rows.AsSpan(0, 1), sequence.Tokens.AsSpan(sequence.Computed, chunk));
            _cost.Prefill(chunk, System.Diagnostics.Stopwatch.GetElapsedTime(started));
            AfterPrefill(sequence, chunk, logits);
            budget -= chunk;
        }
    }

    // Fresh prompts (nothing computed yet) in adjacent slots, each short enough for the budget,
    // run as one right-padded batch. A long fresh prompt runs alone, in chunks.
    private int PrefillFreshGroup(int index, int budget)
    {
        var first = _engine.Running[index];
        var firstChunk = Math.Min(Math.Min(first.Length, _options.PrefillChunkTokens), budget);
        var group = 1;
        var used = firstChunk;
        if (firstChunk == first.Length)
        {
            for (var slot = first.Slot + 1; slot < _bySlot.Length; slot++)
            {
                var next = _bySlot[slot];
                if (next is null || next.Computed != 0 || next.IsDecoding || next.Length > _options.PrefillChunkTokens
                    || used + next.Length > budget || next.Output.Abandoned)
                    break;
                group++;
                used += next.Length;
            }
        }
        var written = 0;
        for (var r = 0; r < group; r++)
        {
            var sequence = _bySlot[first.Slot + r]!;
            var count = r == 0 ? firstChunk : sequence.Length;
            _rows[r] = new SequenceStep(0, count);
            sequence.Tokens.AsSpan(0, count).CopyTo(_rowTokens.AsSpan(written));
            written += count;
        }
        var started = System.Diagnostics.Stopwatch.GetTimestamp();
        var logits = _model.Step(first.Slot, _rows.AsSpan(0, group), _rowTokens.AsSpan(0, written));
        _cost.Prefill(written, System.Diagnostics.Stopwatch.GetElapsedTime(started));
        var vocab = _model.VocabSize;
        for (var r = 0; r < group; r++)
        {
            var sequence = _bySlot[first.Slot + r]!;
            AfterPrefill(sequence, r == 0 ? firstChunk : sequence.Length, logits.Slice(r * vocab, vocab));
        }
        return used;
    }

    private void AfterPrefill(Sequence sequence, int chunk, ReadOnlySpan<float> logits)
    {
        _kv.Computed(sequence.Slot, sequence.Computed, sequence.Tokens.AsSpan(sequence.Computed, chunk));
        sequence.Computed += chunk;
        _engine.Metrics.PromptComputed(chunk);
        if (sequence.Computed == sequence.Length)
            _engine.Accept(sequence, logits[.._model.VocabSize]);
    }

    private void RunDecodes()
    {
        var lastSlot = -1;
        var decoding = 0;
        foreach (var sequence in _engine.Running)
        {
            if (sequence.IsDecoding && !sequence.Output.IsFinished)
            {
                lastSlot = Math.Max(lastSlot, sequence.Slot);
                decoding++;
            }
        }
        if (decoding == 0)
            return;

        // One row per slot from 0 to the last decoding one; other slots in that range get a
        // scratch row that writes past their valid KV.
        for (var slot = 0; slot <= lastSlot; slot++)
        {
            var sequence = _bySlot[slot];
            if (sequence is not null && sequence.IsDecoding && !sequence.Output.IsFinished)
            {
                _rows[slot] = new SequenceStep(sequence.Computed, 1);
                _rowTokens[slot] = sequence.Tokens[sequence.Length - 1];
            }
            else
            {
                _rows[slot] = new SequenceStep(_kv.ScratchPosition(slot), 1);
                _rowTokens[slot] = 0;
            }
        }
        var started = System.Diagnostics.Stopwatch.GetTimestamp();
        var logits = _model.Step(0, _rows.AsSpan(0, lastSlot + 1), _rowTokens.AsSpan(0, lastSlot + 1));
        _cost.Decode(System.Diagnostics.Stopwatch.GetElapsedTime(started));
        var vocab = _model.VocabSize;
        for (var slot = 0; slot <= lastSlot; slot++)
        {
            var sequence = _bySlot[slot];
            if (sequence is null || !sequence.IsDecoding || sequence.Output.IsFinished)
                continue;
            _kv.Computed(slot, sequence.Computed, sequence.Tokens.AsSpan(sequence.Computed, 1));
            sequence.Computed++;
            _engine.Accept(sequence, logits.Slice(slot * vocab, vocab));
        }
    }
}
