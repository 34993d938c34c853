namespace InferenceServer.Model;

/// <summary>
/// What a paged step brings back, per sequence (row order): the argmax token, the top-k logits
/// (descending) and their ids, logsumexp over the vocabulary (log-probability = logit -
/// logsumexp), and the whole logits row when asked for. Valid until the next step.
/// </summary>
public readonly ref struct PagedStepResult(
    ReadOnlySpan<long> nextTokens, ReadOnlySpan<float> topLogits, ReadOnlySpan<long> topIds,
    ReadOnlySpan<float> logSumExp, ReadOnlySpan<float> logits, int topK)
{
    public ReadOnlySpan<long> NextTokens { get; } = nextTokens;
    public ReadOnlySpan<float> TopLogits { get; } = topLogits;
    public ReadOnlySpan<long> TopIds { get; } = topIds;
    public ReadOnlySpan<float> LogSumExp { get; } = logSumExp;
    public ReadOnlySpan<float> Logits { get; } = logits;
    public int TopK { get; } = topK;
}
