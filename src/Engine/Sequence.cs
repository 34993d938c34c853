using InferenceServer.Engine.Sampling;
using InferenceServer.Engine.Speculation;
using InferenceServer.Tokenizer;

namespace InferenceServer.Engine;

/// <summary>
/// A request as the engine loop sees it. Only the loop thread touches it, except the
/// cancellation flag on its output.
/// </summary>
internal sealed class Sequence : IDisposable
{
    /// <param name="prompt">The tokens to compute: the request's prompt, less a healed last token.</param>
    /// <param name="healedBytes">The bytes of the prompt's last token when it was taken back to be spelled again, else empty.</param>
    public Sequence(long id, GenerationRequest request, ReadOnlySpan<int> prompt, byte[] healedBytes, Sampler sampler,
        StreamingDetokenizer detokenizer, GenerationOutput output, long submittedAt, CancellationToken cancellation)
    {
        Id = id;
        Request = request;
        Sampler = sampler;
        Detokenizer = detokenizer;
        Output = output;
        SubmittedAt = submittedAt;
        // Each healing token spells at least one of the healed bytes, on top of max_tokens.
        Tokens = new int[prompt.Length + request.MaxTokens + healedBytes.Length];
        prompt.CopyTo(Tokens);
        Length = PromptLength = prompt.Length;
        HealedBytes = healedBytes;
        HealingLeft = healedBytes.Length;
        if (cancellation.CanBeCanceled)
            CancellationRegistration = cancellation.Register(static state => ((GenerationOutput)state!).Abandon(), output);
    }

    /// <summary>Arrival order: first come, first served among equal priorities.</summary>
    public long Id { get; }
    public GenerationRequest Request { get; }
    public Sampler Sampler { get; }
    public StreamingDetokenizer Detokenizer { get; }
    public GenerationOutput Output { get; }
    public CancellationTokenRegistration CancellationRegistration { get; }

    /// <summary>Prompt then generated tokens; the first <see cref="Length"/> are valid.</summary>
    public int[] Tokens { get; }
    public int Length { get; set; }

    /// <summary>
    /// Tokens whose KV is computed, or is being computed by the iteration just planned (the
    /// scheduler commits a plan when it makes it). A sequence decodes when all but its newest token are.
    /// </summary>
    public int Computed { get; set; }

    /// <summary>
    /// Where its KV is while admitted, else -1: its slot on the dense path, its block table's
    /// index on the paged one (<see cref="Kv.KvLayout"/> decides; nothing else reads it).
    /// </summary>
    public int KvIndex { get; set; } = -1;

    public int PromptLength { get; }

    /// <summary>The request's adapter (0: none); its KV is reused only by sequences of the same adapter.</summary>
    public int AdapterId => Request.AdapterId;
    public int Generated => Length - PromptLength;

    /// <summary>The healed prompt end (see <see cref="Tokenizer.TokenHealing"/>); the last <see cref="HealingLeft"/> bytes are still to spell.</summary>
    public byte[] HealedBytes { get; }
    public int HealingLeft { get; set; }

    /// <summary>Generated tokens that spelled healed bytes; they do not count toward max_tokens.</summary>
    public int HealingTokens { get; set; }
    public bool IsDecoding => Computed == Length - 1;

    /// <summary>Spaces and tabs so far at the start of the output's current line; -1 before the first newline and past the indentation.</summary>
    public int LineIndent { get; set; } = -1;

    public long SubmittedAt { get; }
    public long FirstAdmittedAt { get; set; }

    /// <summary>When it was last admitted, counted in admissions: the newest running sequence is preempted first.</summary>
    public long AdmissionOrder { get; set; }
    public long FirstTokenAt { get; set; }
    public long LastTokenAt { get; set; }
    public int CachedPromptTokens { get; set; } = -1;
    public int Preemptions { get; set; }

    public bool CancelRequested => Output.Abandoned;

    /// <summary>Its prompt-lookup index, made when speculation first drafts for it.</summary>
    public PromptLookupDrafter? Drafter { get; set; }

    /// <summary>Tokens still to generate before max_tokens (healing tokens do not count).</summary>
    public int TokensLeft => Request.MaxTokens - (Generated - HealingTokens);

    /// <summary>
    /// Whether the next token needs the whole logits row, or the reductions a step returns with
    /// <paramref name="reducedTopK"/> (logit, id) pairs will do (<see cref="Sampler.CanSampleFromTop"/>:
    /// greedy or top-k within the step's, no penalties, no more alternatives than it holds); token
    /// healing masks the logits, so it needs the row. A prefill-only request samples nothing.
    /// </summary>
    public bool NeedsLogitsRow(int reducedTopK) =>
        !Request.PrefillOnly && (reducedTopK == 0 || HealingLeft > 0 || !Sampler.CanSampleFromTop(reducedTopK));

    public void Dispose()
    {
        CancellationRegistration.Dispose();
        Sampler.Dispose();
        Drafter?.Dispose();
    }
}
