using System.Diagnostics;
using System.Text.Json;
using InferenceServer.Engine;
using InferenceServer.Engine.Sampling;
using Microsoft.AspNetCore.Http;

namespace InferenceServer.Server.Http;

/// <summary>
/// What llama.cpp's native endpoints (/infill, /completion) share once the prompt is known: the
/// sampling fields with llama.cpp's defaults, n_predict, n_indent, t_max_predict_ms, running the
/// generation whole or streamed, and the result's shape, with response_fields.
/// </summary>
internal sealed class LlamaCppGeneration(ServedModel model)
{
    /// <summary>Sampling as llama.cpp reads it: temperature 0.8, top_k 40, top_p 0.95, min_p 0.05 unless given; seed -1 is random.</summary>
    public static SamplingParameters Sampling(LlamaCppRequest body) => new()
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

    /// <summary>
    /// n_predict as the shared builder takes it: positive is a limit; negative (llama.cpp's -1), or
    /// at least the whole context, is "until the end of the context" (a default of int.MaxValue,
    /// which the builder caps at what the context leaves); 0 is a warm-up, checked with 1.
    /// </summary>
    public (int? MaxTokens, int DefaultMax) Limits(LlamaCppRequest body)
    {
        int? maxTokens = body.NPredict is > 0 and var n && n < model.ContextLength ? n : null;
        return (maxTokens, body.NPredict == 0 ? 1 : int.MaxValue);
    }

    /// <summary>The llama.cpp options the engine applies itself: n_predict 0, n_indent, t_max_predict_ms, ignore_eos.</summary>
    public static GenerationRequest Apply(GenerationRequest request, LlamaCppRequest body)
    {
        if (body.NIndent is < 0)
            throw HttpApiException.BadRequest($"n_indent must not be negative, got {body.NIndent}", "n_indent");
        return request with
        {
            // n_predict 0 computes the prompt and keeps its KV for the next request (llama.vim and
            // llama.vscode send it to warm the cache), generating nothing.
            PrefillOnly = body.NPredict == 0,
            MinLineIndent = body.NIndent ?? 0,
            NewlineTimeLimit = body.TMaxPredictMs is > 0 and var ms ? TimeSpan.FromMilliseconds(ms) : null,
            IgnoreEos = request.IgnoreEos || body.IgnoreEos == true,
        };
    }

    public async Task RunAsync(HttpContext context, GenerationRequest request, LlamaCppRequest body, bool truncated, CancellationToken generation)
    {
        var started = Stopwatch.GetTimestamp();
        GenerationOutput output;
        try
        {
            output = model.Engine.Submit(request, generation);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            throw HttpApiException.From(e);
        }
        var fields = body.ResponseFields is { Count: > 0 } list ? list : null;
        if (body.Stream == true)
            await StreamAsync(context, output, truncated, started, fields).ConfigureAwait(false);
        else
            await CompleteAsync(context, output, truncated, started, fields).ConfigureAwait(false);
    }

    private async Task CompleteAsync(HttpContext context, GenerationOutput output, bool truncated, long started, IReadOnlyList<string>? fields)
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
            truncated, result.Usage, Stopwatch.GetElapsedTime(started));
        if (fields is null)
            await HttpApi.WriteJsonAsync(context, StatusCodes.Status200OK, final, OpenAiJsonContext.Default.InfillResult).ConfigureAwait(false);
        else
            await HttpApi.WriteJsonAsync(context, StatusCodes.Status200OK, Select(final, fields), OpenAiJsonContext.Default.DictionaryStringJsonElement).ConfigureAwait(false);
    }

    private async Task StreamAsync(HttpContext context, GenerationOutput output, bool truncated, long started, IReadOnlyList<string>? fields)
    {
        // llama.cpp's streams end with the final result, without data: [DONE].
        await HttpApi.StreamEventsAsync(context, output,
            async (writer, e) =>
            {
                if (e.Text.Length > 0)
                {
                    var partial = new InfillPartial { Content = e.Text, Tokens = e.TokenIds };
                    await HttpApi.WriteEventAsync(context, writer, partial, OpenAiJsonContext.Default.InfillPartial).ConfigureAwait(false);
                }
            },
            async (writer, e) =>
            {
                var final = Result("", [], StopType(e.FinishReason!.Value, e.MatchedStop), e.MatchedStop ?? "", truncated, e.Usage!.Value,
                    Stopwatch.GetElapsedTime(started));
                if (fields is null)
                    await HttpApi.WriteEventAsync(context, writer, final, OpenAiJsonContext.Default.InfillResult).ConfigureAwait(false);
                else
                    await HttpApi.WriteEventAsync(context, writer, Select(final, fields), OpenAiJsonContext.Default.DictionaryStringJsonElement).ConfigureAwait(false);
            },
            endWithDone: false).ConfigureAwait(false);
    }

    /// <summary>
    /// response_fields as llama.cpp answers it: each path ("content", "timings/prompt_n") that names
    /// a field of the result, under the path itself as a flat key; paths that name nothing are left out.
    /// </summary>
    internal static Dictionary<string, JsonElement> Select(InfillResult result, IReadOnlyList<string> paths)
    {
        var whole = JsonSerializer.SerializeToElement(result, OpenAiJsonContext.Default.InfillResult);
        var selected = new Dictionary<string, JsonElement>(StringComparer.Ordinal);
        foreach (var path in paths)
        {
            if (path is null)
                continue;
            var current = whole;
            var found = true;
            foreach (var key in path.Split('/'))
            {
                if (current.ValueKind != JsonValueKind.Object || !current.TryGetProperty(key, out current))
                {
                    found = false;
                    break;
                }
            }
            if (found)
                selected[path] = current;
        }
        return selected;
    }

    private InfillResult Result(string content, IReadOnlyList<int> tokens, string stopType, string stoppingWord, bool truncated, Usage usage, TimeSpan total)
    {
        // Prompt time: from admission to the first token (to the end when nothing was generated);
        // prediction time: from the first token to the end.
        var promptN = usage.PromptTokens - usage.CachedPromptTokens;
        var promptMs = Math.Max(0, ((usage.CompletionTokens > 0 ? usage.TimeToFirstToken : total) - usage.QueueTime).TotalMilliseconds);
        var predictedMs = usage.CompletionTokens > 0 ? Math.Max(0, (total - usage.TimeToFirstToken).TotalMilliseconds) : 0;
        return new InfillResult
        {
            Content = content,
            Tokens = tokens,
            Model = model.Name,
            TokensPredicted = usage.CompletionTokens,
            TokensEvaluated = usage.PromptTokens,
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
