namespace InferenceServer.Model;

/// <summary>
/// One row of a model step: the sequence already has KV for <see cref="PastLength"/> tokens (in
/// its slot on the dense path, in its blocks on the paged one) and this step appends
/// <see cref="TokenCount"/> new ones.
/// </summary>
public readonly record struct SequenceStep(int PastLength, int TokenCount);
