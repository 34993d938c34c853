namespace InferenceServer.Model;

/// <summary>
/// One row of a model step: the slot already holds <see cref="PastLength"/> tokens of KV and
/// this step appends <see cref="TokenCount"/> new ones.
/// </summary>
public readonly record struct SequenceStep(int PastLength, int TokenCount);
