namespace InferenceServer.Engine;

/// <summary>
/// A request that one engine has checked, once, against its model (context length, vocabulary,
/// KV budget) and whose sampling parameters are valid: what <see cref="InferenceEngine.Submit(ValidatedRequest, CancellationToken)"/>
/// takes. Only <see cref="InferenceEngine.Validate"/> makes one, and only that engine accepts it.
/// </summary>
public sealed class ValidatedRequest
{
    internal ValidatedRequest(InferenceEngine engine, GenerationRequest request, int[] prompt)
    {
        Engine = engine;
        Request = request;
        Prompt = prompt;
    }

    public GenerationRequest Request { get; }

    internal InferenceEngine Engine { get; }

    /// <summary>The prompt's token ids (the request's own array when it gave one).</summary>
    internal int[] Prompt { get; }
}
