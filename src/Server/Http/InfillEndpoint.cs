using System.Diagnostics;
using System.Text;
using System.Text.Json;
using InferenceServer.Engine;
using InferenceServer.Engine.Sampling;
using Microsoft.AspNetCore.Http;

namespace InferenceServer.Server.Http;

/// <summary>
/// POST /infill, compatible with llama.cpp's server (what llama.vim and llama.vscode call).
/// The prompt is [FIM prefix marker] extra + input_prefix [FIM suffix marker] input_suffix
/// [FIM middle marker] prompt, where:
///   - extra is each input_extra chunk as "{filename}\n{text}\n" (just "{text}\n" without a filename),
///     in the order given, in front of input_prefix. (llama.cpp uses repo-level file-separator tokens
///     when the model has them; this server keeps the chunks as plain text in the prefix.)
///   - prompt is the start of the middle (the text before the cursor on its line), after the middle
///     marker, as llama.cpp does.
/// When the prompt does not leave room for n_predict tokens (one when unbounded) in the context,
/// input_extra chunks are dropped from the front (the oldest) until it does, and "truncated" is true.
/// Missing sampling fields take llama.cpp's defaults: temperature 0.8, top_k 40, top_p 0.95,
/// min_p 0.05; n_predict -1 (any negative) generates until a stop or the end of the context; a seed
/// of -1 (or none) is random. Streaming sends data: {index, content, tokens, stop: false} events and
/// a last data: event with the final result (content "", stop: true); llama.cpp sends no [DONE].
/// </summary>
internal sealed class InfillEndpoint(ServerOptions options, ServedModel model, ServerState state)
{
    public async Task HandleAsync(HttpContext context)
    {
        // As in CompletionsEndpoint: the client leaving or the shutdown's cutoff ends the generation.
        using var generation = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted, state.Cutoff);
        var body = await HttpApi.ReadJsonAsync(context, OpenAiJsonContext.Default.InfillRequest, options.MaxRequestBodyBytes, state.Cutoff).ConfigureAwait(false);
        var (request, truncated) = Prepare(body);
        if (body.NPredict == 0)
        {
            // Nothing to predict (llama.cpp evaluates the prompt and returns an empty content).
            var empty = Result("", [], "limit", "", truncated, request.PromptTokens.Count, new Usage(request.PromptTokens.Count, 0, 0, default, default), TimeSpan.Zero);
            await Respond(context, body.Stream == true, empty).ConfigureAwait(false);
            return;
        }
        var started = Stopwatch.GetTimestamp();
        GenerationOutput output;
        try
        {
            output = model.Engine.Submit(request, generation.Token);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            throw HttpApiException.From(e);
        }
        if (body.Stream == true)
            await StreamAsync(context, output, truncated, started).ConfigureAwait(false);
        else
            await CompleteAsync(context, output, truncated, started).ConfigureAwait(false);
    }

    private (GenerationRequest Request, bool Truncated) Prepare(InfillRequest body)
    {
        var prefix = body.InputPrefix ?? "";
        var suffix = body.InputSuffix ?? "";
        var middle = body.Prompt ?? "";
        var extra = body.InputExtra ?? [];
        var stop = RequestFields.Stop(body.Stop, options.Limits.MaxStopStrings);
        var priority = body.Priority ?? 0;
        var sampling = new SamplingParameters
        {
            Temperature = body.Temperature ?? 0.8,
            TopK = body.TopK is { } k ? Math.Max(0, k) : 40,
            TopP = body.TopP ?? 0.95,
            MinP = body.MinP ?? 0.05,
            RepetitionPenalty = body.RepeatPenalty ?? 1.0,
            PresencePenalty = body.PresencePenalty ?? 0,
            FrequencyPenalty = body.FrequencyPenalty ?? 0,
            Seed = body.Seed is { } seed and not -1 ? unchecked((ulong)seed) : null,
        };
        // n_predict: positive is a limit; negative, or at least the whole context, is "until the end
        // of the context" (a default of int.MaxValue, which the shared builder caps at what the
        // context leaves); 0 is checked with 1.
        int? maxTokens = body.NPredict is > 0 and var n && n < model.ContextLength ? n : null;
        var defaultMax = body.NPredict == 0 ? 1 : int.MaxValue;
        try
        {
            if (model.Fim is not { } fim)
            {
                // No FIM tokens: the shared builder gives the same error as for an OpenAI suffix.
                GenerationRequests.Build(model, options.Limits, new PromptInput.Infill(prefix, suffix), sampling, maxTokens, stop, [], priority, null, defaultMax);
                throw new RequestException(GrpcStatus.InvalidArgument, $"model '{model.Name}' cannot fill in the middle");
            }
            // Keep the most input_extra chunks (dropping from the front) that leave room: fewer chunks
            // never make a longer prompt, so a binary search over the first chunk kept finds it.
            var room = model.ContextLength - Math.Max(1, maxTokens ?? 1);
            int[] middleIds = middle.Length > 0 ? model.Tokenizer.Encode(middle, parseSpecialTokens: false) : [];
            PromptInput Input(int first)
            {
                var fullPrefix = WithExtra(extra, first, prefix);
                return middleIds.Length == 0
                    ? new PromptInput.Infill(fullPrefix, suffix)
                    : new PromptInput.TokenIds([.. fim.Build(model.Tokenizer, fullPrefix, suffix), .. middleIds]);
            }
            int low = 0, high = extra.Count;
            var input = Input(0);
            if (PromptLength(input, fim) > room)
            {
                while (low < high)
                {
                    var mid = (low + high) / 2;
                    if (PromptLength(Input(mid), fim) <= room)
                        high = mid;
                    else
                        low = mid + 1;
                }
                input = Input(low);
            }
            var first = low;
            // The FIM stop tokens, which the shared builder adds itself for an Infill input.
            IReadOnlyList<int> stopIds = input is PromptInput.TokenIds ? fim.StopIds : [];
            var request = GenerationRequests.Build(model, options.Limits, input, sampling, maxTokens, stop, stopIds, priority, null, defaultMax, body.TokenHealing ?? true);
            return (body.IgnoreEos == true ? request with { IgnoreEos = true } : request, first > 0);
        }
        catch (RequestException e)
        {
            throw HttpApiException.From(e);
        }
    }

    private int PromptLength(PromptInput input, Tokenizer.FimTemplate fim) => input switch
    {
        PromptInput.TokenIds ids => ids.Ids.Count,
        PromptInput.Infill infill => fim.Build(model.Tokenizer, infill.Prefix, infill.Suffix).Length,
        _ => 0,
    };

    private static string WithExtra(IReadOnlyList<InfillExtraChunk> extra, int first, string prefix)
    {
        if (first >= extra.Count)
            return prefix;
        var text = new StringBuilder();
        for (var i = first; i < extra.Count; i++)
        {
            var chunk = extra[i] ?? throw HttpApiException.BadRequest($"input_extra[{i}] is null", "input_extra");
            if (!string.IsNullOrEmpty(chunk.Filename))
                text.Append(chunk.Filename).Append('\n');
            text.Append(chunk.Text).Append('\n');
        }
        return text.Append(prefix).ToString();
    }

    private async Task CompleteAsync(HttpContext context, GenerationOutput output, bool truncated, long started)
    {
        GenerationResult result;
        try
        {
            result = await output.CollectAsync(context.RequestAborted).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            return;
        }
        RequestRecord.SetUsage(context, result.Usage);
        if (result.FinishReason == FinishReason.Cancelled)
            throw HttpApiException.ShuttingDown();
        var final = Result(result.Text, result.TokenIds, StopType(result.FinishReason, result.MatchedStop), result.MatchedStop ?? "",
            truncated, result.Usage.PromptTokens, result.Usage, Stopwatch.GetElapsedTime(started));
        await HttpApi.WriteJsonAsync(context, StatusCodes.Status200OK, final, OpenAiJsonContext.Default.InfillResult).ConfigureAwait(false);
    }

    private async Task StreamAsync(HttpContext context, GenerationOutput output, bool truncated, long started)
    {
        HttpApi.StartEventStream(context);
        using var writer = HttpApi.CreateWriter(context.Response.BodyWriter);
        try
        {
            await context.Response.BodyWriter.FlushAsync(context.RequestAborted).ConfigureAwait(false);
            await foreach (var e in output.WithCancellation(context.RequestAborted).ConfigureAwait(false))
            {
                if (e.Text.Length > 0)
                {
                    var partial = new InfillPartial { Content = e.Text, Tokens = e.TokenIds };
                    await HttpApi.WriteEventAsync(context, writer, partial, OpenAiJsonContext.Default.InfillPartial).ConfigureAwait(false);
                }
                if (!e.IsFinal)
                    continue;
                RequestRecord.SetUsage(context, e.Usage!.Value);
                if (e.FinishReason == FinishReason.Cancelled)
                {
                    await HttpApi.WriteEventAsync(context, writer, HttpApi.ErrorBody(HttpApiException.ShuttingDown()), OpenAiJsonContext.Default.ErrorResponse).ConfigureAwait(false);
                    break;
                }
                var usage = e.Usage!.Value;
                var final = Result("", [], StopType(e.FinishReason!.Value, e.MatchedStop), e.MatchedStop ?? "", truncated, usage.PromptTokens, usage,
                    Stopwatch.GetElapsedTime(started));
                await HttpApi.WriteEventAsync(context, writer, final, OpenAiJsonContext.Default.InfillResult).ConfigureAwait(false);
                break;
            }
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            // The client went away; the abandoned output frees the sequence.
        }
    }

    private static Task Respond(HttpContext context, bool stream, InfillResult result)
    {
        if (!stream)
            return HttpApi.WriteJsonAsync(context, StatusCodes.Status200OK, result, OpenAiJsonContext.Default.InfillResult);
        return StreamOne(context, result);
    }

    private static async Task StreamOne(HttpContext context, InfillResult result)
    {
        HttpApi.StartEventStream(context);
        using var writer = HttpApi.CreateWriter(context.Response.BodyWriter);
        await HttpApi.WriteEventAsync(context, writer, result, OpenAiJsonContext.Default.InfillResult).ConfigureAwait(false);
    }

    private InfillResult Result(string content, IReadOnlyList<int> tokens, string stopType, string stoppingWord, bool truncated, int evaluated, Usage usage, TimeSpan total)
    {
        // Prompt time: from admission to the first token; prediction time: from the first token to the end.
        var promptN = usage.PromptTokens - usage.CachedPromptTokens;
        var promptMs = usage.CompletionTokens > 0 ? Math.Max(0, (usage.TimeToFirstToken - usage.QueueTime).TotalMilliseconds) : 0;
        var predictedMs = usage.CompletionTokens > 0 ? Math.Max(0, (total - usage.TimeToFirstToken).TotalMilliseconds) : 0;
        return new InfillResult
        {
            Content = content,
            Tokens = tokens,
            Model = model.Name,
            TokensPredicted = usage.CompletionTokens,
            TokensEvaluated = evaluated,
            TokensCached = usage.CachedPromptTokens,
            Truncated = truncated,
            StopType = stopType,
            StoppingWord = stoppingWord,
            Timings = new InfillTimings
            {
                PromptN = promptN,
                PromptMs = promptMs,
                PromptPerTokenMs = promptN > 0 ? promptMs / promptN : 0,
                PromptPerSecond = promptMs > 0 ? promptN * 1000.0 / promptMs : 0,
                PredictedN = usage.CompletionTokens,
                PredictedMs = predictedMs,
                PredictedPerTokenMs = usage.CompletionTokens > 0 ? predictedMs / usage.CompletionTokens : 0,
                PredictedPerSecond = predictedMs > 0 ? usage.CompletionTokens * 1000.0 / predictedMs : 0,
            },
        };
    }

    private static string StopType(FinishReason reason, string? matchedStop) => reason switch
    {
        FinishReason.Length => "limit",
        FinishReason.Stop => matchedStop is null ? "eos" : "word",
        _ => "none",
    };

}
