using InferenceServer.Composition;
using InferenceServer.Engine;
using InferenceServer.Engine.Sampling;
using InferenceServer.LoadGenerator.Measurement;
using InferenceServer.Server;

namespace InferenceServer.LoadGenerator.Targets;

/// <summary>
/// The engine in this process, with no network: prompts are built by the same code the front
/// ends use (<see cref="GenerationRequests"/>), so text and fill-in-the-middle prompts are the
/// same tokens a server would compute.
/// </summary>
public sealed class InProcessTarget : ILoadTarget
{
    private readonly ServedModel _model;
    private readonly bool _ownsModel;

    public InProcessTarget(ServedModel model, bool ownsModel)
    {
        _model = model ?? throw new ArgumentNullException(nameof(model));
        _ownsModel = ownsModel;
    }

    /// <summary>Loads a model folder and starts its engine, on the CPU or (<paramref name="cuda"/>) over the paged graph on CUDA.</summary>
    /// <param name="iterationBudget">The engine's time budget per iteration (null: the server's default).</param>
    /// <param name="speculativeDrafts">Prompt-lookup drafts per step (0: off).</param>
    public static InProcessTarget Load(string modelPath, int maxBatch, int contextLength, int threads, bool cuda = false, TimeSpan? iterationBudget = null,
        int speculativeDrafts = 0) =>
        new(CompositionRoot.LoadModel(modelPath, maxBatch, contextLength, threads,
            new EngineOptions { IterationTimeBudget = iterationBudget ?? EngineOptions.InteractiveIterationBudget, SpeculativeDraftTokens = speculativeDrafts }, cuda), ownsModel: true);

    public ServedModel Model => _model;
    public string Kind => "inprocess";
    public string Address => _model.Folder.Path;

    public async Task<RequestRecord> SendAsync(LoadRequest request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        using var timer = new ResponseTimer(cancellationToken);
        GenerationOutput output;
        try
        {
            PromptInput input = request.Suffix is { } suffix ? new PromptInput.Infill(request.Prompt, suffix) : new PromptInput.Text(request.Prompt);
            var sampling = new SamplingParameters { Temperature = request.Temperature };
            var generation = GenerationRequests.Build(_model, new RequestLimits(), input, sampling, request.MaxTokens, request.Stop, [], priority: 0, requestId: null,
                defaultMaxTokens: request.MaxTokens) with { IgnoreEos = request.IgnoreEos };
            output = _model.Engine.Submit(generation, cancellationToken);
        }
        catch (Exception e) when (e is RequestException or RequestValidationException or EngineOverloadedException or EngineStoppedException)
        {
            var status = RequestException.From(e).Status;
            return timer.Failed("engine:" + GrpcTarget.StatusName((int)status), e.Message);
        }
        try
        {
            await foreach (var e in output.WithCancellation(cancellationToken).ConfigureAwait(false))
            {
                timer.Tokens(e.TokenIds.Count);
                if (!e.IsFinal)
                    continue;
                if (e.FinishReason == FinishReason.Cancelled)
                    return cancellationToken.IsCancellationRequested ? timer.Cancelled() : timer.Failed("engine:CANCELLED", "the engine cancelled the generation");
                var usage = e.Usage!.Value;
                return timer.Complete(usage.CompletionTokens, usage.PromptTokens, usage.CachedPromptTokens,
                    e.FinishReason == FinishReason.Length ? "length" : "stop");
            }
            return timer.Failed("engine:NO_FINISH", "the output ended without a final event");
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            return timer.Cancelled();
        }
        catch (EngineFaultedException e)
        {
            // The engine's own failure, as the run's first error says it.
            return timer.Failed("engine:FAULTED", e.InnerException?.Message ?? e.Message);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_ownsModel)
            await _model.DisposeAsync().ConfigureAwait(false);
    }
}
