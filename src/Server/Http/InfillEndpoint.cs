using System.Text;
using InferenceServer.Engine;
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
/// When the prompt does not leave room for n_predict tokens (one when unbounded) in the context, it
/// is trimmed and "truncated" is true: first input_extra chunks are dropped from the front (the
/// oldest), then the prefix loses tokens from its front and the suffix from its back. As in
/// llama.cpp's server, the suffix gets a quarter of the room less the markers and the middle, the
/// prefix the rest; a side that needs less than its share leaves it to the other.
/// Everything else (sampling defaults, n_predict, n_indent, t_max_predict_ms, response_fields, the
/// result) is shared with /completion (<see cref="LlamaCppGeneration"/>).
/// </summary>
internal sealed class InfillEndpoint(ServerOptions options, ServedModels models, ServerState state)
{
    public async Task HandleAsync(HttpContext context)
    {
        // As in CompletionsEndpoint: the client leaving or the shutdown's cutoff ends the generation.
        using var generation = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted, state.Cutoff);
        var body = await HttpApi.ReadJsonAsync(context, OpenAiJsonContext.Default.InfillRequest, options.MaxRequestBodyBytes, state.Cutoff).ConfigureAwait(false);
        var model = OpenAiGeneration.Find(models, body.Model);
        var llamaCpp = new LlamaCppGeneration(model);
        var (request, truncated) = Prepare(body, model, llamaCpp);
        await llamaCpp.RunAsync(context, request, body, truncated, generation.Token).ConfigureAwait(false);
    }

    private (GenerationRequest Request, bool Truncated) Prepare(InfillRequest body, ServedModel model, LlamaCppGeneration llamaCpp)
    {
        var prefix = body.InputPrefix ?? "";
        var suffix = body.InputSuffix ?? "";
        var middle = body.Prompt ?? "";
        var extra = body.InputExtra ?? [];
        var stop = RequestFields.Stop(body.Stop, options.Limits.MaxStopStrings);
        var priority = body.Priority ?? 0;
        var sampling = LlamaCppGeneration.Sampling(body);
        var (maxTokens, defaultMax) = llamaCpp.Limits(body);
        try
        {
            if (model.Fim is not { } fim)
            {
                // No FIM tokens: the same errors, in the same order, as for an OpenAI suffix.
                GenerationRequests.CheckLimits(options.Limits, stop, [], priority);
                throw GenerationRequests.NoFillInTheMiddle(model);
            }
            var room = model.ContextLength - Math.Max(1, maxTokens ?? 1);
            int[] middleIds = middle.Length > 0 ? model.Tokenizer.Encode(middle, parseSpecialTokens: false) : [];
            PromptInput Input(int first)
            {
                var fullPrefix = WithExtra(extra, first, prefix);
                return middleIds.Length == 0
                    ? new PromptInput.Infill(fullPrefix, suffix)
                    : new PromptInput.TokenIds([.. fim.Build(model.Tokenizer, fullPrefix, suffix), .. middleIds]);
            }
            // Keep the most input_extra chunks (dropping from the front) that leave room: fewer chunks
            // never make a longer prompt, so a binary search over the first chunk kept finds it.
            int low = 0, high = extra.Count;
            var input = Input(0);
            if (PromptLength(model, input, fim) > room)
            {
                while (low < high)
                {
                    var mid = (low + high) / 2;
                    if (PromptLength(model, Input(mid), fim) <= room)
                        high = mid;
                    else
                        low = mid + 1;
                }
                input = Input(low);
            }
            var truncated = low > 0;
            if (PromptLength(model, input, fim) > room)
            {
                input = Trimmed(model, fim, prefix, suffix, middleIds, room);
                truncated = true;
            }
            // The FIM stop tokens, which the shared builder adds itself for an Infill input.
            IReadOnlyList<int> stopIds = input is PromptInput.TokenIds ? fim.StopIds : [];
            var request = GenerationRequests.Build(model, options.Limits, input, sampling, maxTokens, stop, stopIds, priority, null, defaultMax, body.TokenHealing ?? true);
            return (LlamaCppGeneration.Apply(request, body), truncated);
        }
        catch (RequestException e)
        {
            throw HttpApiException.From(e);
        }
    }

    /// <summary>
    /// The prompt without input_extra, with the prefix cut from its front and the suffix from its
    /// back until it is at most <paramref name="room"/> tokens.
    /// </summary>
    private static PromptInput.TokenIds Trimmed(ServedModel model, Tokenizer.FimTemplate fim, string prefix, string suffix, int[] middleIds, int room)
    {
        var tokenizer = model.Tokenizer;
        var prefixIds = tokenizer.Encode(prefix, parseSpecialTokens: false);
        var suffixIds = tokenizer.Encode(suffix, parseSpecialTokens: false);
        var fixedLength = fim.Build(tokenizer, [], []).Length + middleIds.Length;
        var available = room - fixedLength;
        if (available < 0)
        {
            throw new RequestException(RequestErrorCode.InvalidArgument,
                $"the prompt is {fixedLength} tokens without input_prefix and input_suffix; with n_predict it exceeds this model's context length of {model.ContextLength}");
        }
        // The suffix's share: a quarter of the room less the markers and the middle (at least what the prefix leaves over).
        var suffixTake = Math.Min(suffixIds.Length, Math.Max(Math.Max(0, (room / 4) - fixedLength), available - prefixIds.Length));
        var prefixTake = Math.Min(prefixIds.Length, available - suffixTake);
        var ids = fim.Build(tokenizer, prefixIds.AsSpan(prefixIds.Length - prefixTake), suffixIds.AsSpan(0, suffixTake));
        return new PromptInput.TokenIds([.. ids, .. middleIds]);
    }

    private static int PromptLength(ServedModel model, PromptInput input, Tokenizer.FimTemplate fim) => input switch
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
}
