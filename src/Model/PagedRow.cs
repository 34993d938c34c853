namespace InferenceServer.Model;

/// <summary>One sequence of a paged step: KV for <see cref="PastLength"/> tokens is in its blocks; <see cref="TokenCount"/> new ones follow.</summary>
public readonly record struct PagedRow(int PastLength, int TokenCount);
