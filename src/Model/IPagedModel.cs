namespace InferenceServer.Model;

/// <summary>
/// What the engine needs from a paged model: one step over any mix of sequences, each with its
/// own past (held in pool blocks the caller names) and any number of new tokens, returning the
/// reduced sampling outputs of each sequence's last token. <see cref="PagedCudaRunner"/> is the
/// real one (PagedAttention exists only on CUDA); the engine's tests use a stand-in on the CPU.
/// </summary>
public interface IPagedModel
{
    int VocabSize { get; }

    /// <summary>Longest sequence, prompt and completion together.</summary>
    int Capacity { get; }

    /// <summary>Tokens per KV block, and blocks in the pool.</summary>
    int BlockTokens { get; }
    int KvBlocks { get; }

    /// <summary>Most blocks one sequence's table holds.</summary>
    int MaxBlocksPerSequence { get; }

    /// <summary>Most sequences, and most new tokens, one step carries.</summary>
    int MaxSequences { get; }
    int MaxStepTokens { get; }

    /// <summary>How many (logit, id) pairs a step returns per sequence, best first.</summary>
    int TopK { get; }

    /// <summary>
    /// Runs one step; <paramref name="blockTable"/> holds <paramref name="tableWidth"/> block ids
    /// per row. With <paramref name="withLogits"/> each row's whole logits row comes back too.
    /// The result is valid until the next step.
    /// </summary>
    PagedStepResult Step(scoped ReadOnlySpan<SequenceStep> rows, scoped ReadOnlySpan<int> tokens, scoped ReadOnlySpan<int> blockTable, int tableWidth, bool withLogits = false);
}
