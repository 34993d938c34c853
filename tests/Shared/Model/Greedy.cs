using InferenceServer.Model;

namespace InferenceServer.Tests;

/// <summary>
/// The simplest decoding loop on one slot: prefill the prompt, then take the most likely token
/// until a stop id or the limit: the runner's own reference, which the model and builder tests
/// compare against, and the bare-runner scenario of the load generator. Serving goes through the
/// engine, which does the real scheduling. Compiled into the projects that use it, not shipped.
/// </summary>
internal static class Greedy
{
    public static int[] Generate(DecoderRunner runner, ReadOnlySpan<int> prompt, int maxTokens, ReadOnlySpan<int> stopIds, int slot = 0)
    {
        ArgumentNullException.ThrowIfNull(runner);
        if (prompt.IsEmpty)
            throw new ArgumentException("the prompt is empty", nameof(prompt));
        var generated = new List<int>(maxTokens);
        if (maxTokens <= 0)
            return [];
        var logits = runner.Step(slot, [new SequenceStep(0, prompt.Length)], prompt);
        var length = prompt.Length;
        Span<int> next = stackalloc int[1];
        while (true)
        {
            next[0] = ArgMax(logits[..runner.VocabSize]);
            generated.Add(next[0]);
            if (generated.Count == maxTokens || stopIds.Contains(next[0]) || length == runner.Capacity)
                break;
            logits = runner.Step(slot, [new SequenceStep(length, 1)], next);
            length++;
        }
        return [.. generated];
    }

    public static int ArgMax(ReadOnlySpan<float> values) => System.Numerics.Tensors.TensorPrimitives.IndexOfMax(values);
}
