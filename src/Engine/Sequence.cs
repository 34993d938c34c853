using InferenceServer.Engine.Sampling;
using InferenceServer.Tokenizer;

namespace InferenceServer.Engine;

/// <summary>
/// A request as the engine loop sees it. Only the loop thread touches it, except the
/// cancellation flag on its output.
/// </summary>
internal sealed class Sequence : IDisposable
{
    public Sequence(long id, GenerationRequest request, Sampler sampler, StreamingDetokenizer detokenizer, GenerationOutput output, long submittedAt, CancellationToken cancellation)
    {
        Id = id;
        Request = request;
        Sampler = sampler;
        Detokenizer = detokenizer;
        Output = output;
        SubmittedAt = submittedAt;
        Tokens = new int[request.PromptTokens.Count + request.MaxTokens];
        for (var i = 0; i < request.PromptTokens.Count; i++)
            Tokens[i] = request.PromptTokens[i];
        Length = request.PromptTokens.Count;
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

    /// <summary>Tokens whose KV is in the slot. A sequence decodes when all but its newest token are computed.</summary>
    public int Computed { get; set; }

    /// <summary>The KV slot while admitted, else -1.</summary>
    public int Slot { get; set; } = -1;

    public int PromptLength => Request.PromptTokens.Count;
    public int Generated => Length - PromptLength;
    public bool IsDecoding => Computed == Length - 1;

    public long SubmittedAt { get; }
    public long FirstAdmittedAt { get; set; }
    public long FirstTokenAt { get; set; }
    public long LastTokenAt { get; set; }
    public int CachedPromptTokens { get; set; } = -1;
    public int Preemptions { get; set; }

    public bool CancelRequested => Output.Abandoned;

    public void Dispose()
    {
        CancellationRegistration.Dispose();
        Sampler.Dispose();
    }
}
