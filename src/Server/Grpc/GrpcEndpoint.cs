using System.IO.Pipelines;
using Google.Protobuf;
using InferenceServer.Engine;
using InferenceServer.Engine.Sampling;
using InferenceServer.Protocol;
using InferenceServer.Protocol.Health;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Logging;

namespace InferenceServer.Server.Grpc;

/// <summary>
/// The gRPC protocol layer on Kestrel's HTTP/2: checks the call (HTTP/2 POST, application/grpc,
/// identity encoding, API key, deadline), routes "/package.Service/Method" to a handler, reads
/// and writes length-prefixed messages through the request and response pipes, and ends every
/// call with grpc-status and grpc-message (in trailers, or as a trailers-only response when the
/// call fails before any message was sent). A client that resets the stream or disconnects
/// cancels the call, and with it the generation; so does the end of a shutdown's grace period,
/// which the client sees as UNAVAILABLE. The health service needs no API key (probes carry none).
/// </summary>
internal sealed class GrpcEndpoint
{
    private const string InferenceService = "inference.v1.Inference";
    private const string HealthService = "grpc.health.v1.Health";

    private readonly ServerOptions _options;
    private readonly ServedModel _model;
    private readonly ServerState _state;
    private readonly ApiKeys _keys;
    private readonly ILogger _logger;
    private readonly Dictionary<string, Func<CallContext, Task>> _methods;

    public GrpcEndpoint(ServerOptions options, ServedModel model, ServerState state, ILoggerFactory loggers)
    {
        _options = options;
        _model = model;
        _state = state;
        _keys = new ApiKeys(options.ApiKeys);
        _logger = loggers.CreateLogger(typeof(GrpcEndpoint).FullName!);
        _methods = new Dictionary<string, Func<CallContext, Task>>(StringComparer.Ordinal)
        {
            [$"/{InferenceService}/Generate"] = GenerateAsync,
            [$"/{InferenceService}/GenerateStream"] = GenerateStreamAsync,
            [$"/{InferenceService}/Tokenize"] = TokenizeAsync,
            [$"/{InferenceService}/Detokenize"] = DetokenizeAsync,
            [$"/{InferenceService}/ListModels"] = ListModelsAsync,
            [$"/{InferenceService}/GetModelInfo"] = GetModelInfoAsync,
            [$"/{HealthService}/Check"] = HealthCheckAsync,
            [$"/{HealthService}/Watch"] = HealthWatchAsync,
        };
        foreach (var (path, handler) in GrpcReflection.Methods(new GrpcReflection(_methods.Keys)))
            _methods[path] = handler;
    }

    public async Task HandleAsync(HttpContext http)
    {
        var request = http.Request;
        if (!HttpMethods.IsPost(request.Method) || request.ContentType is not { } contentType
            || !contentType.StartsWith("application/grpc", StringComparison.OrdinalIgnoreCase))
        {
            // Not gRPC at all: plain HTTP, as the gRPC spec asks for a wrong content type.
            http.Response.StatusCode = StatusCodes.Status415UnsupportedMediaType;
            await http.Response.WriteAsync("this port serves gRPC (application/grpc over HTTP/2)").ConfigureAwait(false);
            return;
        }

        using var deadline = new CancellationTokenSource();
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(http.RequestAborted, deadline.Token, _state.Cutoff);
        var call = new CallContext(http, linked.Token, _options.MaxMessageBytes);
        http.Response.ContentType = "application/grpc";
        try
        {
            if (request.Protocol != HttpProtocol.Http2)
                throw new RequestException(GrpcStatus.Internal, "gRPC needs HTTP/2");
            if (request.Headers["grpc-encoding"] is { Count: > 0 } encoding && encoding.ToString() != "identity")
                throw new RequestException(GrpcStatus.Unimplemented, $"grpc-encoding '{encoding}' is not supported (identity only)");
            if (GrpcFraming.ParseTimeout(request.Headers["grpc-timeout"]) is { } timeout)
                deadline.CancelAfter(timeout);
            if (!_methods.TryGetValue(request.Path.Value ?? "", out var handler))
                throw new RequestException(GrpcStatus.Unimplemented, $"unknown method {request.Path}");
            var health = (request.Path.Value ?? "").StartsWith($"/{HealthService}/", StringComparison.Ordinal);
            if (!health && _keys.Required && !_keys.Accepts(request.Headers.Authorization.ToString()))
                throw new RequestException(GrpcStatus.Unauthenticated, "a valid API key is required in the authorization metadata (Bearer <key>)");
            if (_state.State != ServingState.Serving && !health)
                throw new RequestException(GrpcStatus.Unavailable, ServerHost.Unavailable(_state.State));

            await handler(call).ConfigureAwait(false);
            Finish(call, GrpcStatus.Ok, null);
        }
        catch (Exception e) when (e is not null)
        {
            if (http.RequestAborted.IsCancellationRequested)
            {
                if (RequestRecord.Of(http) is { } record)
                    record.GrpcStatus = GrpcStatus.Cancelled;
                return;
            }
            var failure = CallFailures.Classify(e, http, _state, _logger, deadline.IsCancellationRequested);
            Finish(call, failure.Status, failure.Message);
        }
    }

    // Trailers after a response body; a trailers-only response (status in the headers) before one.
    private static void Finish(CallContext call, GrpcStatus status, string? message)
    {
        if (RequestRecord.Of(call.Http) is { } record)
            record.GrpcStatus = status;
        var response = call.Http.Response;
        if (!response.HasStarted)
        {
            response.Headers["grpc-status"] = ((int)status).ToString(System.Globalization.CultureInfo.InvariantCulture);
            if (message is not null)
                response.Headers["grpc-message"] = GrpcFraming.EncodeMessage(message);
            return;
        }
        response.AppendTrailer("grpc-status", ((int)status).ToString(System.Globalization.CultureInfo.InvariantCulture));
        if (message is not null)
            response.AppendTrailer("grpc-message", GrpcFraming.EncodeMessage(message));
    }

    private async Task GenerateAsync(CallContext call)
    {
        var request = await call.ReadSingleAsync(GenerateRequest.Parser).ConfigureAwait(false);
        var output = Submit(request, call.Cancellation);
        var result = await output.CollectAsync(call.Cancellation).ConfigureAwait(false);
        RequestRecord.SetUsage(call.Http, result.Usage);
        var response = new GenerateResponse
        {
            Text = result.Text,
            FinishReason = Map(result.FinishReason),
            Usage = Map(result.Usage),
            RequestId = request.RequestId,
        };
        response.TokenIds.Add(result.TokenIds);
        AddLogprobs(response, result.Logprobs);
        await call.WriteAsync(response).ConfigureAwait(false);
    }

    private async Task GenerateStreamAsync(CallContext call)
    {
        var request = await call.ReadSingleAsync(GenerateRequest.Parser).ConfigureAwait(false);
        var output = Submit(request, call.Cancellation);
        await call.StartAsync().ConfigureAwait(false);
        // One message object, refilled for every delta.
        var delta = new GenerateResponse { RequestId = request.RequestId };
        await foreach (var e in output.WithCancellation(call.Cancellation).ConfigureAwait(false))
        {
            delta.Text = e.Text;
            delta.TokenIds.Clear();
            delta.TokenIds.Add(e.TokenIds);
            delta.Logprobs.Clear();
            if (e.Logprobs is not null)
                AddLogprobs(delta, e.Logprobs);
            if (e.IsFinal)
            {
                RequestRecord.SetUsage(call.Http, e.Usage!.Value);
                delta.FinishReason = Map(e.FinishReason!.Value);
                delta.Usage = Map(e.Usage!.Value);
            }
            await call.WriteAsync(delta).ConfigureAwait(false);
        }
    }

    private GenerationOutput Submit(GenerateRequest request, CancellationToken cancellation)
    {
        CheckModel(request.Model);
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
        var engineRequest = GenerationRequests.Build(_model, _options.Limits, input, sampling, request.MaxTokens == 0 ? null : request.MaxTokens,
            [.. request.Stop], [.. request.StopTokenIds], request.Priority, request.RequestId, _options.DefaultMaxTokens,
            request.HasTokenHealing ? request.TokenHealing : null);
        return _model.Engine.Submit(engineRequest, cancellation);
    }

    private void CheckModel(string name)
    {
        if (name.Length > 0 && name != _model.Name)
            throw new RequestException(GrpcStatus.NotFound, $"model '{name}' is not served here (this server serves '{_model.Name}')");
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

    private async Task TokenizeAsync(CallContext call)
    {
        var request = await call.ReadSingleAsync(TokenizeRequest.Parser).ConfigureAwait(false);
        CheckModel(request.Model);
        var response = new TokenizeResponse();
        response.TokenIds.Add(_model.Tokenizer.Encode(request.Text, request.AddSpecialTokens));
        await call.WriteAsync(response).ConfigureAwait(false);
    }

    private async Task DetokenizeAsync(CallContext call)
    {
        var request = await call.ReadSingleAsync(DetokenizeRequest.Parser).ConfigureAwait(false);
        CheckModel(request.Model);
        foreach (var id in request.TokenIds)
        {
            if ((uint)id >= (uint)_model.Tokenizer.VocabSize)
                throw new RequestException(GrpcStatus.InvalidArgument, $"token id {id} is outside the vocabulary (0..{_model.Tokenizer.VocabSize - 1})");
        }
        var ids = request.TokenIds.ToArray();
        await call.WriteAsync(new DetokenizeResponse { Text = _model.Tokenizer.Decode(ids, request.SkipSpecialTokens) }).ConfigureAwait(false);
    }

    private async Task ListModelsAsync(CallContext call)
    {
        await call.ReadSingleAsync(ListModelsRequest.Parser).ConfigureAwait(false);
        var response = new ListModelsResponse();
        response.Models.Add(Info());
        await call.WriteAsync(response).ConfigureAwait(false);
    }

    private async Task GetModelInfoAsync(CallContext call)
    {
        var request = await call.ReadSingleAsync(GetModelInfoRequest.Parser).ConfigureAwait(false);
        CheckModel(request.Model);
        await call.WriteAsync(Info()).ConfigureAwait(false);
    }

    private ModelInfo Info() => new()
    {
        Name = _model.Name,
        ContextLength = _model.ContextLength,
        VocabSize = _model.VocabSize,
        FimFamily = _model.Fim?.Family ?? "",
        MaxBatch = _model.MaxBatch,
    };

    private HealthCheckResponse.Types.ServingStatus HealthOf(string service)
    {
        if (service.Length > 0 && service != InferenceService)
            throw new RequestException(GrpcStatus.NotFound, $"unknown service '{service}'");
        return _state.State == ServingState.Serving ? HealthCheckResponse.Types.ServingStatus.Serving : HealthCheckResponse.Types.ServingStatus.NotServing;
    }

    private async Task HealthCheckAsync(CallContext call)
    {
        var request = await call.ReadSingleAsync(HealthCheckRequest.Parser).ConfigureAwait(false);
        await call.WriteAsync(new HealthCheckResponse { Status = HealthOf(request.Service) }).ConfigureAwait(false);
    }

    // The current status, then every change, until the client goes away.
    private async Task HealthWatchAsync(CallContext call)
    {
        var request = await call.ReadSingleAsync(HealthCheckRequest.Parser).ConfigureAwait(false);
        var changed = new SemaphoreSlim(0);
        void OnChange(ServingState _) => changed.Release();
        _state.Changed += OnChange;
        try
        {
            var last = HealthOf(request.Service);
            await call.StartAsync().ConfigureAwait(false);
            await call.WriteAsync(new HealthCheckResponse { Status = last }).ConfigureAwait(false);
            while (true)
            {
                await changed.WaitAsync(call.Cancellation).ConfigureAwait(false);
                var now = HealthOf(request.Service);
                if (now != last)
                    await call.WriteAsync(new HealthCheckResponse { Status = last = now }).ConfigureAwait(false);
            }
        }
        finally
        {
            _state.Changed -= OnChange;
            changed.Dispose();
        }
    }
}

/// <summary>One call: its pipes, its cancellation (client reset, disconnect or deadline) and message limit.</summary>
internal sealed class CallContext(HttpContext http, CancellationToken cancellation, int maxMessageBytes)
{
    public HttpContext Http { get; } = http;
    public CancellationToken Cancellation { get; } = cancellation;

    private PipeReader Reader => Http.Request.BodyReader;
    private PipeWriter Writer => Http.Response.BodyWriter;

    /// <summary>
    /// A unary request: exactly one message, then the end of the request. A second message (or part
    /// of one) is a broken call, as gRPC's own servers answer it, not something to ignore.
    /// </summary>
    public async Task<T> ReadSingleAsync<T>(MessageParser<T> parser) where T : class, IMessage<T>
    {
        var message = await GrpcFraming.ReadMessageAsync(Reader, parser, maxMessageBytes, Cancellation).ConfigureAwait(false)
            ?? throw new RequestException(GrpcStatus.Internal, "the call carried no request message");
        if (await GrpcFraming.ReadMessageAsync(Reader, parser, maxMessageBytes, Cancellation).ConfigureAwait(false) is not null)
            throw new RequestException(GrpcStatus.Internal, "the call carried more than one request message; this method takes one");
        return message;
    }

    public Task<T?> ReadNextAsync<T>(MessageParser<T> parser) where T : class, IMessage<T> =>
        GrpcFraming.ReadMessageAsync(Reader, parser, maxMessageBytes, Cancellation).AsTask();

    /// <summary>Sends the response headers now (streams start before their first message is ready).</summary>
    public Task StartAsync() => Http.Response.StartAsync(Cancellation);

    public async Task WriteAsync(IMessage message)
    {
        GrpcFraming.WriteMessage(Writer, message);
        await Writer.FlushAsync(Cancellation).ConfigureAwait(false);
    }
}
