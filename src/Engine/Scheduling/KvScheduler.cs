namespace InferenceServer.Engine;

/// <summary>
/// The part of the engine loop that depends on how the model keeps KV: admitting a sequence
/// (finding it KV, reusing a cached prefix), reserving room for the next decode, running the
/// model for an iteration and handing each sequence's logits to the engine, and releasing KV.
/// Called only on the engine's thread.
/// </summary>
internal abstract class KvScheduler
{
    public abstract int VocabSize { get; }
    public abstract int Capacity { get; }

    /// <summary>The KV budget in blocks of <see cref="BlockTokens"/> tokens.</summary>
    public abstract int TotalBlocks { get; }
    public abstract int BlockTokens { get; }

    /// <summary>Blocks running sequences hold, and blocks kept only for prefix reuse.</summary>
    public abstract int UsedBlocks { get; }
    public abstract int CachedBlocks { get; }

    public int BlocksFor(int tokens) => (tokens + BlockTokens - 1) / BlockTokens;

    /// <summary>
    /// Gives a waiting sequence KV for its tokens so far plus the next one, reusing what a cache
    /// holds of its prefix (<see cref="Sequence.Computed"/> says how much). False: not now.
    /// </summary>
    public abstract bool TryAdmit(Sequence sequence);

    /// <summary>Room for each decoding sequence's next position; preempts through the engine when there is none.</summary>
    public abstract void ReserveDecodeBlocks();

    /// <summary>This iteration's model work: prefill chunks and decodes, each finished prompt or decode handed to the engine to sample.</summary>
    public abstract void Run();

    /// <summary>The sequence leaves (finished or preempted): its KV is released, what can be shared stays cached.</summary>
    public abstract void Release(Sequence sequence);
}
