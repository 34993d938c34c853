namespace InferenceServer.Engine.Kv;

/// <summary>
/// The part of scheduling that depends on how the model keeps KV: finding a sequence room (and a
/// cached prefix to reuse), growing it by a position, recording what was computed, and releasing
/// it. Everything else (queues, budgets, preemption) is the <see cref="Scheduler"/>'s, the same for
/// both layouts: <see cref="DenseSlotLayout"/> (the dense graph's slots) and
/// <see cref="PagedBlockLayout"/> (the paged graph's block pool). Bookkeeping only: it never runs
/// the model. Called only on the engine's thread.
/// </summary>
internal abstract class KvLayout
{
    /// <summary>Longest sequence, prompt and completion together.</summary>
    public abstract int Capacity { get; }

    /// <summary>Most sequences running at once.</summary>
    public abstract int MaxSequences { get; }

    /// <summary>The KV budget in blocks of <see cref="BlockTokens"/> tokens.</summary>
    public abstract int TotalBlocks { get; }
    public abstract int BlockTokens { get; }

    /// <summary>Blocks running sequences hold, and blocks kept only for prefix reuse.</summary>
    public abstract int UsedBlocks { get; }
    public abstract int CachedBlocks { get; }

    public int BlocksFor(int tokens) => (tokens + BlockTokens - 1) / BlockTokens;

    /// <summary>
    /// Gives a waiting sequence KV for its tokens so far plus the next one, reusing what a cache
    /// holds of its prefix (sets <see cref="Sequence.Computed"/> to how much); a copy the model must
    /// make first goes into <paramref name="plan"/>. False, and no change: not now.
    /// </summary>
    public abstract bool TryAdmit(Sequence sequence, IterationPlan plan);

    /// <summary>Room for <paramref name="tokens"/> positions, evicting cached KV if need be; false when there is none.</summary>
    public abstract bool TryGrow(Sequence sequence, int tokens);

    /// <summary>Records that this iteration computes the sequence's tokens from <paramref name="start"/> to its <see cref="Sequence.Computed"/>.</summary>
    public abstract void Computed(Sequence sequence, int start);

    /// <summary>The sequence leaves (finished, cancelled or preempted): its KV is released, what can be shared stays cached.</summary>
    public abstract void Release(Sequence sequence);
}
