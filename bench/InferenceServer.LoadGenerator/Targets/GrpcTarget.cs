using InferenceServer.Client;
using InferenceServer.LoadGenerator.Measurement;
using InferenceServer.Protocol;

namespace InferenceServer.LoadGenerator.Targets;

/// <summary>Our gRPC service, inference.v1.Inference/GenerateStream (or Generate, unstreamed), through the repository's client.</summary>
public sealed class GrpcTarget : ILoadTarget
{
    private readonly InferenceClient _client;
    private readonly ModelNames _models;

    /// <param name="address">http://HOST:PORT (h2c) or https://HOST:PORT.</param>
    /// <param name="model">The model field: a name, or names separated by commas sent in turn (<see cref="ModelNames"/>).</param>
    public GrpcTarget(Uri address, string? model, string? apiKey)
    {
        ArgumentNullException.ThrowIfNull(address);
        _client = new InferenceClient(address, apiKey);
        _models = new ModelNames(model);
        Address = $"{(address.Scheme == Uri.UriSchemeHttps ? "grpcs" : "grpc")}://{address.Authority}";
    }

    public string Kind => "grpc";
    public string Address { get; }

    public async Task<RequestRecord> SendAsync(LoadRequest request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        var message = new GenerateRequest
        {
            Model = _models.Next() ?? "",
            MaxTokens = request.MaxTokens,
            Temperature = (float)request.Temperature,
        };
        // The protocol has no ignore-EOS switch: with no stop strings or ids, only the model's end-of-sequence ends a stream early.
        message.Stop.Add(request.Stop);
        if (request.Suffix is { } suffix)
            message.Infill = new Infill { Prefix = request.Prompt, Suffix = suffix };
        else
            message.Prompt = request.Prompt;

        using var timer = new ResponseTimer(cancellationToken);
        GenerateResponse? last = null;
        try
        {
            if (!request.Stream)
            {
                var whole = await _client.GenerateAsync(message, cancellationToken: cancellationToken).ConfigureAwait(false);
                timer.Tokens(whole.TokenIds.Count);
                if (whole.FinishReason != FinishReason.Unspecified)
                    last = whole;
            }
            else
            {
                // Read to the end, trailers included: leaving early would reset a stream that already succeeded.
                await foreach (var response in _client.GenerateStreamAsync(message, cancellationToken: cancellationToken).ConfigureAwait(false))
                {
                    timer.Tokens(response.TokenIds.Count);
                    if (response.FinishReason != FinishReason.Unspecified)
                        last ??= response;
                }
            }
            if (last is null)
                return timer.Failed("grpc:NO_FINISH", "the stream ended without a finish reason");
            if (last.FinishReason == FinishReason.Cancelled)
                return timer.Failed("grpc:SERVER_CANCELLED", "the server cancelled the generation");
            var usage = last.Usage;
            return timer.Complete(usage?.CompletionTokens, usage?.PromptTokens, usage?.CachedPromptTokens, FinishName(last.FinishReason));
        }
        catch (Exception e) when (cancellationToken.IsCancellationRequested && e is OperationCanceledException or IOException or HttpRequestException or GrpcCallException)
        {
            // Resetting the stream can surface as any of these, depending on where the read was.
            return timer.Cancelled();
        }
        catch (GrpcCallException e)
        {
            return timer.Failed("grpc:" + StatusName(e.Status), e.StatusMessage);
        }
        catch (HttpRequestException e)
        {
            return timer.Failed("transport:" + e.HttpRequestError, e.Message);
        }
        catch (IOException e)
        {
            return timer.Failed("transport:io", e.Message);
        }
    }

    private static string FinishName(FinishReason reason) => reason switch
    {
        FinishReason.Length => "length",
        FinishReason.Stop => "stop",
        _ => reason.ToString().ToLowerInvariant(),
    };

    /// <summary>The canonical name of a gRPC status code.</summary>
    public static string StatusName(int status) => status switch
    {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => status.ToString(System.Globalization.CultureInfo.InvariantCulture),
    };

    public ValueTask DisposeAsync()
    {
        _client.Dispose();
        return ValueTask.CompletedTask;
    }
}
