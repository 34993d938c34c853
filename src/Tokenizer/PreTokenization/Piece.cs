namespace InferenceServer.Tokenizer.PreTokenization;

/// <summary>A word on its way to the model: a range of a string, so that splitting copies nothing.</summary>
public readonly record struct Piece(string Text, int Start, int Length)
{
    public ReadOnlySpan<char> Span => Text.AsSpan(Start, Length);

    /// <summary>
    /// Where this piece started in the text given to the pre-tokenizers; pieces made by an
    /// earlier split keep their parent's origin. SentencePiece's "prepend first" rule uses it.
    /// </summary>
    public bool AtTextStart { get; init; }
}
