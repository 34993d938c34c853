using System.Diagnostics.Metrics;

namespace InferenceServer.Engine;

/// <summary>
/// What the front ends are handed: validate and submit requests, read the counts and instruments,
/// learn of a fault, stop. <see cref="InferenceEngine"/> is the one implementation; the program's
/// composition root decides which model and KV layout it runs over.
/// </summary>
public interface IInferenceEngine : IAsyncDisposable
{
    /// <summary>Longest sequence, prompt and completion together.</summary>
    int Capacity { get; }

    /// <summary>The KV budget in blocks, and the tokens per block.</summary>
    int TotalKvBlocks { get; }
    int KvBlockTokens { get; }

    /// <summary>Counts as of the latest iteration (read on any thread).</summary>
    EngineSnapshot Snapshot { get; }

    /// <summary>The engine's instruments (meter "InferenceServer.Engine"), for exporters.</summary>
    Meter Meter { get; }

    /// <summary>What stopped the engine, when a model step or the loop itself threw; null while it runs or after a clean stop.</summary>
    Exception? Fault { get; }

    /// <summary>Completes when the engine has stopped, cleanly or after a fault.</summary>
    Task Stopped { get; }

    /// <inheritdoc cref="InferenceEngine.Validate"/>
    ValidatedRequest Validate(GenerationRequest request);

    /// <inheritdoc cref="InferenceEngine.Submit(ValidatedRequest, CancellationToken)"/>
    GenerationOutput Submit(ValidatedRequest validated, CancellationToken cancellationToken = default);

    /// <inheritdoc cref="InferenceEngine.Submit(GenerationRequest, CancellationToken)"/>
    GenerationOutput Submit(GenerationRequest request, CancellationToken cancellationToken = default);
}
