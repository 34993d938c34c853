namespace InferenceServer.Tokenizer.PreTokenization;

/// <summary>tokenizer.json "pre_tokenizer": splits (and may rewrite) text into the words BPE sees.</summary>
public abstract class PreTokenizer
{
    /// <summary>
    /// Splits every piece in <paramref name="pieces"/>, in place; <paramref name="scratch"/> is
    /// working space. Lists are reused across calls, so splitting allocates nothing.
    /// </summary>
    public virtual void Split(List<Piece> pieces, List<Piece> scratch)
    {
        scratch.Clear();
        foreach (var piece in pieces)
            SplitPiece(piece, scratch);
        pieces.Clear();
        pieces.AddRange(scratch);
    }

    protected abstract void SplitPiece(Piece piece, List<Piece> output);

    /// <summary>True when the model sees the UTF-8 bytes of each piece (GPT-2 byte-level BPE).</summary>
    public virtual bool IsByteLevel => false;
}

public sealed class SequencePreTokenizer(IReadOnlyList<PreTokenizer> steps) : PreTokenizer
{
    public override bool IsByteLevel => steps.Any(s => s.IsByteLevel);

    public override void Split(List<Piece> pieces, List<Piece> scratch)
    {
        foreach (var step in steps)
            step.Split(pieces, scratch);
    }

    protected override void SplitPiece(Piece piece, List<Piece> output) =>
        throw new InvalidOperationException("a sequence splits whole lists");
}
