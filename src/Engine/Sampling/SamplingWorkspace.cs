namespace InferenceServer.Engine.Sampling;

/// <summary>
/// Scratch memory for <see cref="Sampler.Sample"/>, sized once for a vocabulary so that sampling
/// a token allocates nothing. Create one per engine thread and pass it to every call; it holds no
/// state between calls, so any sampler may use it, but never two threads at once.
/// </summary>
public sealed class SamplingWorkspace
{
    /// <summary>Exponentials are summed in blocks of this many floats: vectorized within a block, in double across blocks.</summary>
    internal const int SumBlockLength = 4096;

    /// <param name="vocabSize">The largest vocabulary the workspace serves.</param>
    public SamplingWorkspace(int vocabSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(vocabSize);
        VocabSize = vocabSize;
        PenalizedLogits = new float[vocabSize];
        Exponentials = new float[vocabSize];
        BlockSums = new double[(vocabSize + SumBlockLength - 1) / SumBlockLength];
        Keys = new ulong[vocabSize];
        CandidateIds = new int[vocabSize];
        CandidateWeights = new float[vocabSize];
    }

    /// <summary>The largest vocabulary this workspace can sample from.</summary>
    public int VocabSize { get; }

    /// <summary>A copy of the logits with the penalties applied (left unused when no penalty changes anything).</summary>
    internal float[] PenalizedLogits { get; }

    /// <summary>Per token id: exp((score - max) / temperature), for every token or only for the candidates still in play.</summary>
    internal float[] Exponentials { get; }

    /// <summary>The sum of <see cref="Exponentials"/> over each block of <see cref="SumBlockLength"/> tokens.</summary>
    internal double[] BlockSums { get; }

    /// <summary>Rank keys (score, then id) of the tokens under consideration for top-k, top-p and the reported alternatives.</summary>
    internal ulong[] Keys { get; }

    /// <summary>The ids of the candidates that survive truncation.</summary>
    internal int[] CandidateIds { get; }

    /// <summary>Weights in the making: the top-k candidates' in rank order, or many survivors' spread by id.</summary>
    internal float[] CandidateWeights { get; }
}
