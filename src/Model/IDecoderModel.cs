namespace InferenceServer.Model;

/// <summary>
/// What the engine needs from a model: KV slots of a fixed capacity and a step over a
/// contiguous range of them. <see cref="DecoderRunner"/> is the real one; benchmarks of the
/// scheduler use a stand-in that returns fixed logits.
/// </summary>
public interface IDecoderModel
{
    int Slots { get; }
    int Capacity { get; }
    int VocabSize { get; }

    /// <summary>Bytes of KV cache one token takes, over all layers (keys and values).</summary>
    long KvBytesPerToken { get; }

    ReadOnlySpan<float> Step(int firstSlot, scoped ReadOnlySpan<SequenceStep> rows, scoped ReadOnlySpan<int> tokens);

    void CopyPrefix(int fromSlot, int toSlot, int length);

    /// <summary>Whether <see cref="StepKeepingLogits"/> returns the logits of several last positions of a row.</summary>
    bool HasMultiPositionLogits => false;

    /// <summary>
    /// One row in one slot (several new tokens on a past run one row at a time on the CPU) that
    /// returns the logits of its last <paramref name="positions"/> new positions, oldest first,
    /// [positions, vocab]: what checking drafted tokens in one step needs.
    /// </summary>
    ReadOnlySpan<float> StepKeepingLogits(int slot, SequenceStep row, scoped ReadOnlySpan<int> tokens, int positions, int adapter = 0) =>
        throw new NotSupportedException("this model returns the logits of each row's last position only");

    /// <summary>Whether <see cref="Interrupt"/> can end a step under way.</summary>
    bool CanInterrupt => false;

    /// <summary>
    /// Whether the steps the calling thread starts from now on may be ended by
    /// <see cref="Interrupt"/>; turning it off also forgets an interruption not yet acted on.
    /// </summary>
    void AllowInterrupt(bool allowed)
    {
    }

    /// <summary>
    /// Any thread: ends the step under way, or the next one if none is, provided interruption is
    /// allowed (<see cref="AllowInterrupt"/>); that step throws <see cref="StepInterruptedException"/>.
    /// Otherwise nothing happens.
    /// </summary>
    void Interrupt()
    {
    }

    /// <summary>Adapters loaded: ids 1 to this may name a row's adapter (0: none).</summary>
    int AdapterCount => 0;

    /// <summary>
    /// A step whose rows each name an adapter (parallel to <paramref name="rows"/>; 0: none). A
    /// model without adapters takes only zeros.
    /// </summary>
    ReadOnlySpan<float> Step(int firstSlot, scoped ReadOnlySpan<SequenceStep> rows, scoped ReadOnlySpan<int> tokens, scoped ReadOnlySpan<int> adapters)
    {
        foreach (var adapter in adapters)
        {
            if (adapter != 0)
                throw new ArgumentException($"adapter id {adapter}: this model has no adapters", nameof(adapters));
        }
        return Step(firstSlot, rows, tokens);
    }
}
