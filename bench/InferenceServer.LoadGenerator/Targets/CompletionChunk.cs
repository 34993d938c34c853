using System.Text.Json;

namespace InferenceServer.LoadGenerator.Targets;

/// <summary>
/// What the load generator reads from one OpenAI-style completions stream event: whether it
/// carries generated text, the finish reason, the usage (the last chunk with
/// stream_options.include_usage) and an error object. Everything else is skipped.
/// </summary>
public readonly record struct CompletionChunk(
    bool HasText,
    string? FinishReason,
    int? PromptTokens,
    int? CompletionTokens,
    int? CachedTokens,
    string? Error)
{
    /// <summary>Reads one event's JSON; throws <see cref="JsonException"/> when it is not JSON.</summary>
    public static CompletionChunk Parse(ReadOnlySpan<byte> json)
    {
        var reader = new Utf8JsonReader(json);
        bool hasText = false;
        string? finish = null, error = null;
        int? prompt = null, completion = null, cached = null;
        Expect(ref reader, JsonTokenType.StartObject);
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            if (reader.ValueTextEquals("choices"u8))
            {
                reader.Read();
                if (reader.TokenType == JsonTokenType.StartArray)
                    ReadChoices(ref reader, ref hasText, ref finish);
                else
                    reader.Skip();
            }
            else if (reader.ValueTextEquals("usage"u8))
            {
                reader.Read();
                if (reader.TokenType == JsonTokenType.StartObject)
                    ReadUsage(ref reader, ref prompt, ref completion, ref cached);
                else
                    reader.Skip();
            }
            else if (reader.ValueTextEquals("error"u8))
            {
                reader.Read();
                error = ReadError(ref reader);
            }
            else
            {
                reader.Read();
                reader.Skip();
            }
        }
        return new CompletionChunk(hasText, finish, prompt, completion, cached, error);
    }

    private static void ReadChoices(ref Utf8JsonReader reader, ref bool hasText, ref string? finish)
    {
        while (reader.Read() && reader.TokenType == JsonTokenType.StartObject)
        {
            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                if (reader.ValueTextEquals("text"u8))
                {
                    reader.Read();
                    hasText |= reader.TokenType == JsonTokenType.String && reader.ValueSpan.Length > 0;
                    reader.Skip();
                }
                else if (reader.ValueTextEquals("finish_reason"u8))
                {
                    reader.Read();
                    // Some servers send "" rather than null while generating.
                    if (reader.TokenType == JsonTokenType.String && reader.ValueSpan.Length > 0)
                        finish = reader.GetString();
                    reader.Skip();
                }
                else
                {
                    reader.Read();
                    reader.Skip();
                }
            }
        }
    }

    private static void ReadUsage(ref Utf8JsonReader reader, ref int? prompt, ref int? completion, ref int? cached)
    {
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            if (reader.ValueTextEquals("prompt_tokens"u8))
                prompt = ReadInt(ref reader);
            else if (reader.ValueTextEquals("completion_tokens"u8))
                completion = ReadInt(ref reader);
            else if (reader.ValueTextEquals("prompt_tokens_details"u8))
            {
                reader.Read();
                if (reader.TokenType != JsonTokenType.StartObject)
                {
                    reader.Skip();
                    continue;
                }
                while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
                {
                    if (reader.ValueTextEquals("cached_tokens"u8))
                        cached = ReadInt(ref reader);
                    else
                    {
                        reader.Read();
                        reader.Skip();
                    }
                }
            }
            else
            {
                reader.Read();
                reader.Skip();
            }
        }
    }

    private static int? ReadInt(ref Utf8JsonReader reader)
    {
        reader.Read();
        return reader.TokenType == JsonTokenType.Number && reader.TryGetInt32(out var value) ? value : null;
    }

    private static string ReadError(ref Utf8JsonReader reader)
    {
        if (reader.TokenType == JsonTokenType.String)
            return reader.GetString() ?? "error";
        if (reader.TokenType != JsonTokenType.StartObject)
        {
            reader.Skip();
            return "error";
        }
        var message = "error";
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            if (reader.ValueTextEquals("message"u8))
            {
                reader.Read();
                if (reader.TokenType == JsonTokenType.String)
                    message = reader.GetString() ?? message;
                else
                    reader.Skip();
            }
            else
            {
                reader.Read();
                reader.Skip();
            }
        }
        return message;
    }

    private static void Expect(ref Utf8JsonReader reader, JsonTokenType type)
    {
        if (!reader.Read() || reader.TokenType != type)
            throw new JsonException($"expected {type} at the start of a stream event");
    }
}
