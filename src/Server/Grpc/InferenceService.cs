using Google.Protobuf.Reflection;
using Grpc.Core;
using InferenceServer.Engine;
using InferenceServer.Engine.Sampling;
using InferenceServer.Protocol;

namespace InferenceServer.Server.Grpc;

/// <summary>
/// inference.v1.Inference on the generated service base. What every call shares (API key, serving
/// state, the shutdown's cutoff, status mapping) is <see cref="GrpcCallPolicy"/>'s; framing, deadlines
/// and message limits are the library's. Cancellation comes from the call's token: a client that
/// resets the stream, a passed deadline or the end of a shutdown's grace period ends the generation.
/// </summary>
[BindServiceMethod(typeof(InferenceService), nameof(BindService))]
internal sealed class InferenceService(ServerOptions options, ServedModels models) : Inference.InferenceBase
{
    private readonly ServerOptions _options = options;
    private readonly ServedModels _models = models;

    /// <summary>The service's descriptor, where reflection looks for it (beside <see cref="BindService"/>).</summary>
    public static ServiceDescriptor Descriptor => Inference.Descriptor;

    /// <summary>
    /// The generated binding, with request messages checked for text that is not UTF-8 before they are
    /// parsed, and parse failures answered as such (<see cref="CheckedRequestBinder"/>). It takes the generated base, as the generated binding does: the library matches the
    /// handlers against that base's methods.
    /// </summary>
    public static void BindService(ServiceBinderBase binder, Inference.InferenceBase service) =>
        Inference.BindService(new CheckedRequestBinder(binder), service);

    public override async Task<GenerateResponse> Generate(GenerateRequest request, ServerCallContext context)
    {
        var output = Submit(request, context.CancellationToken);
        var result = await output.CollectAsync(context.CancellationToken).ConfigureAwait(false);
        RequestRecord.SetUsage(context.GetHttpContext(), result.Usage);
        var response = new GenerateResponse
        {
            Text = result.Text,
            FinishReason = Map(result.FinishReason),
            Usage = Map(result.Usage),
            RequestId = request.RequestId,
        };
        response.TokenIds.Add(result.TokenIds);
        AddLogprobs(response, result.Logprobs);
        return response;
    }

    public override async Task GenerateStream(GenerateRequest request, IServerStreamWriter<GenerateResponse> responseStream, ServerCallContext context)
    {
        var output = Submit(request, context.CancellationToken);
        // Headers now: a stream starts before its first token is ready.
        await context.WriteResponseHeadersAsync(new Metadata()).ConfigureAwait(false);
        // One message object, refilled for every delta (each is serialized when written).
        var delta = new GenerateResponse { RequestId = request.RequestId };
        await foreach (var e in output.WithCancellation(context.CancellationToken).ConfigureAwait(false))
        {
            delta.Text = e.Text;
            delta.TokenIds.Clear();
            delta.TokenIds.Add(e.TokenIds);
            delta.Logprobs.Clear();
            if (e.Logprobs is not null)
                AddLogprobs(delta, e.Logprobs);
            if (e.IsFinal)
            {
                RequestRecord.SetUsage(context.GetHttpContext(), e.Usage!.Value);
                delta.FinishReason = Map(e.FinishReason!.Value);
                delta.Usage = Map(e.Usage!.Value);
            }
            // No token here: the library resets the stream when a write's token fires, and a call the
            // shutdown ends should end with its status, not a reset (the generation stops through the token above).
            await responseStream.WriteAsync(delta).ConfigureAwait(false);
        }
    }

    private GenerationOutput Submit(GenerateRequest request, CancellationToken cancellation)
    {
        var model = _models.Find(request.Model, request.Adapter);
        PromptInput? input = request.InputCase switch
        {
            GenerateRequest.InputOneofCase.Prompt => new PromptInput.Text(request.Prompt),
            GenerateRequest.InputOneofCase.PromptTokenIds => new PromptInput.TokenIds(request.PromptTokenIds.Ids),
            GenerateRequest.InputOneofCase.Infill => new PromptInput.Infill(request.Infill.Prefix, request.Infill.Suffix),
            _ => null,
        };
        var sampling = new SamplingParameters
        {
            Temperature = request.HasTemperature ? request.Temperature : 1.0,
            TopP = request.HasTopP ? request.TopP : 1.0,
            TopK = request.TopK,
            MinP = request.MinP,
            RepetitionPenalty = request.HasRepetitionPenalty ? request.RepetitionPenalty : 1.0,
            FrequencyPenalty = request.FrequencyPenalty,
            PresencePenalty = request.PresencePenalty,
            Seed = request.HasSeed ? request.Seed : null,
            Logprobs = request.Logprobs,
        };
        var engineRequest = GenerationRequests.Build(model, _options.Limits, input, sampling, request.MaxTokens == 0 ? null : request.MaxTokens,
            [.. request.Stop], [.. request.StopTokenIds], request.Priority, request.RequestId, _options.DefaultMaxTokens,
            request.HasTokenHealing ? request.TokenHealing : null);
        if (request.IgnoreEos)
            engineRequest = engineRequest with { IgnoreEos = true };
        return model.Engine.Submit(engineRequest, cancellation);
    }

    private static Protocol.FinishReason Map(Engine.FinishReason reason) => reason switch
    {
        Engine.FinishReason.Length => Protocol.FinishReason.Length,
        Engine.FinishReason.Stop => Protocol.FinishReason.Stop,
        _ => Protocol.FinishReason.Cancelled,
    };

    private static Protocol.Usage Map(Engine.Usage usage) => new()
    {
        PromptTokens = usage.PromptTokens,
        CompletionTokens = usage.CompletionTokens,
        CachedPromptTokens = usage.CachedPromptTokens,
    };

    private static void AddLogprobs(GenerateResponse response, IReadOnlyList<TokenLogprobs> logprobs)
    {
        foreach (var entry in logprobs)
        {
            var item = new TokenLogprob { TokenId = entry.TokenId, Logprob = entry.Logprob };
            foreach (var alternative in entry.TopAlternatives)
                item.Top.Add(new Protocol.TopLogprob { TokenId = alternative.Id, Logprob = alternative.Logprob });
            response.Logprobs.Add(item);
        }
    }

    public override Task<TokenizeResponse> Tokenize(TokenizeRequest request, ServerCallContext context)
    {
        var model = _models.Find(request.Model);
        var response = new TokenizeResponse();
        response.TokenIds.Add(model.Tokenizer.Encode(request.Text, request.AddSpecialTokens));
        return Task.FromResult(response);
    }

    public override Task<DetokenizeResponse> Detokenize(DetokenizeRequest request, ServerCallContext context)
    {
        var model = _models.Find(request.Model);
        foreach (var id in request.TokenIds)
        {
            if ((uint)id >= (uint)model.Tokenizer.VocabSize)
                throw new RequestException(RequestErrorCode.InvalidArgument, $"token id {id} is outside the vocabulary (0..{model.Tokenizer.VocabSize - 1})");
        }
        var ids = request.TokenIds.ToArray();
        return Task.FromResult(new DetokenizeResponse { Text = model.Tokenizer.Decode(ids, request.SkipSpecialTokens) });
    }

    public override Task<ListModelsResponse> ListModels(ListModelsRequest request, ServerCallContext context)
    {
        var response = new ListModelsResponse();
        foreach (var model in _models.All)
            response.Models.Add(Info(model));
        return Task.FromResult(response);
    }

    public override Task<ModelInfo> GetModelInfo(GetModelInfoRequest request, ServerCallContext context)
    {
        return Task.FromResult(Info(_models.Find(request.Model)));
    }

    private static ModelInfo Info(ServedModel model) => new()
    {
        Name = model.Name,
        ContextLength = model.ContextLength,
        VocabSize = model.VocabSize,
        FimFamily = model.Fim?.Family ?? "",
        MaxBatch = model.MaxBatch,
        Parent = model.Parent?.Name ?? "",
    };
}
