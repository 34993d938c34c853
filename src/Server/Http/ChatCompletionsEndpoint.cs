using System.Text;
using InferenceServer.Engine;
using InferenceServer.Tokenizer.ChatTemplates;
using Microsoft.AspNetCore.Http;

namespace InferenceServer.Server.Http;

/// <summary>
/// POST /v1/chat/completions: the prompt is the model's chat template rendered with the messages and
/// add_generation_prompt, tokenized with special tokens read from their text and nothing added (the
/// template writes any BOS), as transformers' apply_chat_template(tokenize=True) does. The rest, from
/// validation to streaming, is shared with /v1/completions (<see cref="OpenAiGeneration"/>).
/// </summary>
internal sealed class ChatCompletionsEndpoint(ServerOptions options, ServedModels models, ServerState state)
{
    private readonly OpenAiGeneration _generation = new(options, models);

    public Task HandleAsync(HttpContext context) =>
        _generation.RunAsync(context, state, OpenAiJsonContext.Default.ChatCompletionRequest, "chatcmpl-", Prepare, (body, output, id, created, model) =>
            body.Stream == true
                ? StreamAsync(context, model, output, id, created, Logprobs(body), body.StreamOptions?.IncludeUsage == true)
                : CompleteAsync(context, model, output, id, created, Logprobs(body)));

    /// <summary>How many alternatives per token to report: none without logprobs: true.</summary>
    private static int? Logprobs(ChatCompletionRequest body) => body.Logprobs == true ? body.TopLogprobs ?? 0 : null;

    private GenerationRequest Prepare(ChatCompletionRequest body, string id, ServedModel model)
    {
        OpenAiGeneration.CheckCommon(body);
        if (body.TopLogprobs is { } top && (top < 0 || top > LogprobsBuilder.MaxLogprobs))
            throw HttpApiException.BadRequest($"top_logprobs must be between 0 and {LogprobsBuilder.MaxLogprobs}, got {top}", "top_logprobs");
        if (body.TopLogprobs is not null && body.Logprobs != true)
            throw HttpApiException.BadRequest("top_logprobs needs logprobs: true", "top_logprobs");

        var messages = RequestFields.Messages(body.Messages);
        var template = model.Chat;
        if (template.Template is null)
        {
            throw HttpApiException.BadRequest(
                $"model '{model.Name}' has no chat template (no chat_template in its tokenizer_config.json), so it cannot take chat messages; use /v1/completions",
                "messages", "chat_template_missing");
        }
        string prompt;
        try
        {
            prompt = template.Render(messages, addGenerationPrompt: true);
        }
        catch (ChatTemplateException e)
        {
            // raise_exception is how a template refuses a conversation (roles must alternate, ...): the client's to fix.
            var message = e.RaisedByTemplate ? e.Message : $"the chat template failed on these messages: {e.Message}";
            throw HttpApiException.BadRequest(message, "messages", "chat_template_error");
        }
        var ids = model.Tokenizer.Encode(prompt, addSpecialTokens: false, parseSpecialTokens: true);
        if (ids.Length == 0)
            throw HttpApiException.BadRequest("the chat template rendered these messages as an empty prompt", "messages");
        return _generation.Build(model, body, new PromptInput.TokenIds(ids), id, Logprobs(body), body.MaxCompletionTokens ?? body.MaxTokens, tokenHealing: false);
    }

    private static async Task CompleteAsync(HttpContext context, ServedModel model, GenerationOutput output, string id, long created, int? logprobs)
    {
        if (await OpenAiGeneration.CollectAsync(context, output).ConfigureAwait(false) is not { } result)
            return;
        var response = new ChatCompletionResponse
        {
            Id = id,
            Created = created,
            Model = model.Name,
            Choices =
            [
                new ChatChoice
                {
                    Message = new ChatMessageBody { Role = "assistant", Content = result.Text },
                    Logprobs = logprobs is { } k ? ChatLogprobsOf(new LogprobsBuilder(model.Tokenizer, k).Build(result.Logprobs), k) : null,
                    FinishReason = OpenAiGeneration.FinishName(result.FinishReason),
                },
            ],
            Usage = OpenAiGeneration.UsageOf(result.Usage),
        };
        await HttpApi.WriteJsonAsync(context, StatusCodes.Status200OK, response, OpenAiJsonContext.Default.ChatCompletionResponse).ConfigureAwait(false);
    }

    /// <summary>
    /// chat.completion.chunk events: the first with delta {role: "assistant"} (and the first text), then one per
    /// piece of text, then one with an empty delta and the finish_reason, then (stream_options.include_usage)
    /// one with no choices and the usage; then data: [DONE].
    /// </summary>
    private static Task StreamAsync(HttpContext context, ServedModel model, GenerationOutput output, string id, long created, int? logprobs, bool includeUsage)
    {
        var builder = logprobs is { } k ? new LogprobsBuilder(model.Tokenizer, k) : null;
        var first = true;
        return OpenAiGeneration.StreamAsync(context, output, OpenAiJsonContext.Default.ChatCompletionResponse,
            e =>
            {
                var hasLogprobs = builder is not null && e.Logprobs is { Count: > 0 };
                if (e.Text.Length == 0 && !hasLogprobs && !first)
                    return null;
                var chunk = Chunk(model.Name, id, created, new ChatChoice
                {
                    Delta = new ChatMessageBody { Role = first ? "assistant" : null, Content = e.Text },
                    Logprobs = hasLogprobs ? ChatLogprobsOf(builder!.Build(e.Logprobs!), logprobs!.Value) : null,
                });
                first = false;
                return chunk;
            },
            e => Finish(model.Name, id, created, e, includeUsage));
    }

    private static IEnumerable<ChatCompletionResponse> Finish(string modelName, string id, long created, GenerationEvent e, bool includeUsage)
    {
        yield return Chunk(modelName, id, created, new ChatChoice { Delta = new ChatMessageBody(), FinishReason = OpenAiGeneration.FinishName(e.FinishReason!.Value) });
        if (includeUsage)
        {
            yield return new ChatCompletionResponse
            {
                Id = id, Object = "chat.completion.chunk", Created = created, Model = modelName, Choices = [],
                Usage = OpenAiGeneration.UsageOf(e.Usage!.Value),
            };
        }
    }

    private static ChatCompletionResponse Chunk(string modelName, string id, long created, ChatChoice choice) =>
        new() { Id = id, Object = "chat.completion.chunk", Created = created, Model = modelName, Choices = [choice] };

    /// <summary>The chat form of the legacy logprobs: per token its text, logprob, UTF-8 bytes and the top <paramref name="top"/>.</summary>
    private static ChatLogprobs ChatLogprobsOf(CompletionLogprobs legacy, int top)
    {
        var content = new List<ChatTokenLogprob>(legacy.Tokens.Count);
        for (var i = 0; i < legacy.Tokens.Count; i++)
        {
            content.Add(new ChatTokenLogprob
            {
                Token = legacy.Tokens[i],
                Logprob = legacy.TokenLogprobs[i],
                Bytes = BytesOf(legacy.Tokens[i]),
                TopLogprobs = legacy.TopLogprobs[i]
                    .OrderByDescending(p => p.Value)
                    .Take(top)
                    .Select(p => new ChatTokenLogprob { Token = p.Key, Logprob = p.Value, Bytes = BytesOf(p.Key) })
                    .ToList(),
            });
        }
        return new ChatLogprobs { Content = content };
    }

    // A token that is not UTF-8 text on its own is shown as "bytes:\xNN": its bytes are not those of that text.
    private static int[]? BytesOf(string token) =>
        token.StartsWith("bytes:", StringComparison.Ordinal) ? null : Encoding.UTF8.GetBytes(token).Select(b => (int)b).ToArray();
}
