using System.Numerics.Tensors;
using InferenceServer.Engine.Sampling;

namespace InferenceServer.Engine.Speculation;

/// <summary>Receives the tokens a verification chooses, one at a time, in order.</summary>
public interface IVerifiedTokenSink
{
    /// <summary>
    /// Takes the next chosen token (with the alternatives the sampler wrote for it, when asked
    /// for). Returns false when the sequence ends with it (a stop, a length limit), so that no
    /// later position is looked at.
    /// </summary>
    bool Take(SampledToken token, int alternativesWritten);
}

/// <summary>
/// Checks drafted tokens against the logits one model step computed for them. The step ran the
/// sequence's last token followed by the k drafts, and kept the logits of all k + 1 positions:
/// row i is the model's distribution for the token after the last token and the first i drafts.
///
/// Position by position, the sequence's own sampler chooses a token from row i exactly as plain
/// decoding would (penalties, temperature, top-k, top-p, min-p, one draw per token); the draft
/// is accepted when the choice equals it, and the first choice that differs, or the choice after
/// the last draft, ends the step. Greedy, that accepts the longest prefix of drafts equal to the
/// arg-max, plus the model's next token. Sampling, it is the speculative rule for a draft that
/// proposes one token with certainty: the draft d is kept with probability p(d) (the chance that
/// the draw lands on it), and otherwise the token drawn is distributed as p without d,
/// renormalized. So every token has the distribution plain sampling gives it, and with a seed the
/// tokens are the very ones plain decoding would draw, since the draws are the same.
/// Allocates nothing.
/// </summary>
public static class DraftVerifier
{
    /// <summary>
    /// Chooses tokens from <paramref name="logits"/> ([drafts + 1, vocab]) until one differs from
    /// its draft, the drafts run out, or <paramref name="sink"/> ends the sequence. Each chosen
    /// token goes to the sink, which must record it in <paramref name="sampler"/>
    /// (<see cref="Sampler.Accept"/>) before it returns, so the penalties of the next position
    /// count it. Returns how many drafts were accepted; the sink took that many tokens plus one,
    /// or fewer when it ended the sequence.
    /// </summary>
    /// <param name="alternatives">Receives each chosen token's most likely alternatives (overwritten at every position; pass an empty span for none).</param>
    public static int Verify<TSink>(Sampler sampler, SamplingWorkspace workspace, ReadOnlySpan<float> logits, ReadOnlySpan<int> draft,
        Span<TopLogprob> alternatives, ref TSink sink)
        where TSink : IVerifiedTokenSink, allows ref struct
    {
        ArgumentNullException.ThrowIfNull(sampler);
        var vocab = sampler.VocabSize;
        Check(logits, draft, vocab);
        for (var i = 0; ; i++)
        {
            var token = sampler.Sample(logits.Slice(i * vocab, vocab), workspace, alternatives, out var written);
            var accepted = i < draft.Length && token.Id == draft[i];
            if (!sink.Take(token, written) || !accepted)
                return i;
        }
    }

    /// <summary>
    /// <see cref="Verify{TSink}"/> into a span: writes the chosen tokens to
    /// <paramref name="chosen"/> (at least drafts + 1 long), records each in the sampler, and
    /// returns how many were written (the accepted drafts and one more).
    /// </summary>
    public static int Verify(Sampler sampler, SamplingWorkspace workspace, ReadOnlySpan<float> logits, ReadOnlySpan<int> draft, Span<int> chosen)
    {
        ArgumentNullException.ThrowIfNull(sampler);
        if (chosen.Length <= draft.Length)
            throw new ArgumentException($"{draft.Length} drafts choose up to {draft.Length + 1} tokens; the span holds {chosen.Length}", nameof(chosen));
        var sink = new RecordingSink(sampler, chosen);
        return Verify(sampler, workspace, logits, draft, [], ref sink) + 1;
    }

    /// <summary>
    /// Greedy verification without a sampler: the accepted drafts (each equal to the arg-max of
    /// its row, the lowest id among equals, as <see cref="Sampler"/> takes it) and then the arg-max
    /// of the first row that disagrees or of the last row go to <paramref name="chosen"/>;
    /// returns how many were written.
    /// </summary>
    public static int VerifyGreedy(ReadOnlySpan<float> logits, int vocabSize, ReadOnlySpan<int> draft, Span<int> chosen)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(vocabSize);
        Check(logits, draft, vocabSize);
        if (chosen.Length <= draft.Length)
            throw new ArgumentException($"{draft.Length} drafts choose up to {draft.Length + 1} tokens; the span holds {chosen.Length}", nameof(chosen));
        for (var i = 0; ; i++)
        {
            var token = TensorPrimitives.IndexOfMax(logits.Slice(i * vocabSize, vocabSize));
            chosen[i] = token;
            if (i == draft.Length || token != draft[i])
                return i + 1;
        }
    }

    private static void Check(ReadOnlySpan<float> logits, ReadOnlySpan<int> draft, int vocab)
    {
        if (logits.Length != (draft.Length + 1) * vocab)
            throw new ArgumentException($"{draft.Length} drafts need {draft.Length + 1} rows of {vocab} logits, got {logits.Length} values", nameof(logits));
        foreach (var token in draft)
        {
            if ((uint)token >= (uint)vocab)
                throw new ArgumentOutOfRangeException(nameof(draft), token, $"a drafted token must be in [0, {vocab})");
        }
    }

    private ref struct RecordingSink(Sampler sampler, Span<int> chosen) : IVerifiedTokenSink
    {
        private readonly Span<int> _chosen = chosen;
        private int _count;

        public bool Take(SampledToken token, int alternativesWritten)
        {
            sampler.Accept(token.Id);
            _chosen[_count++] = token.Id;
            return true;
        }
    }
}
