using System.Text.Json;
using InferenceServer.Tokenizer.ChatTemplates;

namespace InferenceServer.Server.Http;

/// <summary>Fields whose JSON type varies: interpreted here, with a 400 naming the field when the shape is wrong.</summary>
internal static class RequestFields
{
    /// <summary>A string, an array of token ids, or an array with exactly one string or one token id array.</summary>
    public static PromptInput Prompt(JsonElement prompt)
    {
        switch (prompt.ValueKind)
        {
            case JsonValueKind.Undefined or JsonValueKind.Null:
                throw HttpApiException.BadRequest("prompt is required", "prompt");
            case JsonValueKind.String:
                return new PromptInput.Text(Text(prompt, "prompt"));
            case JsonValueKind.Array:
                break;
            default:
                throw HttpApiException.BadRequest($"prompt must be a string or an array of token ids, got a JSON {Kind(prompt)}", "prompt");
        }
        var count = prompt.GetArrayLength();
        if (count == 0)
            throw HttpApiException.BadRequest("prompt is an empty array", "prompt");
        var first = prompt[0];
        if (first.ValueKind == JsonValueKind.Number)
            return new PromptInput.TokenIds(TokenIds(prompt));
        if (first.ValueKind is JsonValueKind.String or JsonValueKind.Array)
        {
            if (count > 1)
                throw HttpApiException.BadRequest($"only one prompt per request is supported, got an array of {count}", "prompt");
            return first.ValueKind == JsonValueKind.String
                ? new PromptInput.Text(Text(first, "prompt"))
                : new PromptInput.TokenIds(TokenIds(first));
        }
        throw HttpApiException.BadRequest($"prompt must be a string or an array of token ids, got an array of {Kind(first)}", "prompt");
    }

    private static int[] TokenIds(JsonElement array)
    {
        var ids = new int[array.GetArrayLength()];
        if (ids.Length == 0)
            throw HttpApiException.BadRequest("prompt is an empty array", "prompt");
        var i = 0;
        foreach (var item in array.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.Number || !item.TryGetInt32(out ids[i]))
                throw HttpApiException.BadRequest($"prompt[{i}] must be a token id (an integer), got {item.GetRawText()}", "prompt");
            i++;
        }
        return ids;
    }

    /// <summary>Absent or null: none; a string; or an array of strings (at most <paramref name="maxCount"/>).</summary>
    public static IReadOnlyList<string> Stop(JsonElement stop, int maxCount)
    {
        switch (stop.ValueKind)
        {
            case JsonValueKind.Undefined or JsonValueKind.Null:
                return [];
            case JsonValueKind.String:
                return [Text(stop, "stop")];
            case JsonValueKind.Array:
                var count = stop.GetArrayLength();
                if (count > maxCount)
                    throw HttpApiException.BadRequest($"stop takes at most {maxCount} strings, got {count}", "stop");
                var list = new List<string>(count);
                foreach (var item in stop.EnumerateArray())
                {
                    if (item.ValueKind != JsonValueKind.String)
                        throw HttpApiException.BadRequest($"stop must hold strings, got a JSON {Kind(item)}", "stop");
                    list.Add(Text(item, "stop"));
                }
                return list;
            default:
                throw HttpApiException.BadRequest($"stop must be a string or an array of strings, got a JSON {Kind(stop)}", "stop");
        }
    }

    /// <summary>
    /// Chat messages: a non-empty array of {role, content}, role one of system, user, assistant, content a
    /// string or an array of {type: "text", text} parts (joined with newlines, as vLLM does for templates
    /// that take a string). Each problem is a 400 whose param names the field (messages[2].role).
    /// </summary>
    public static IReadOnlyList<ChatMessage> Messages(JsonElement messages)
    {
        switch (messages.ValueKind)
        {
            case JsonValueKind.Undefined or JsonValueKind.Null:
                throw HttpApiException.BadRequest("messages is required", "messages");
            case JsonValueKind.Array:
                break;
            default:
                throw HttpApiException.BadRequest($"messages must be an array of messages, got a JSON {Kind(messages)}", "messages");
        }
        if (messages.GetArrayLength() == 0)
            throw HttpApiException.BadRequest("messages must hold at least one message", "messages");
        var list = new List<ChatMessage>(messages.GetArrayLength());
        foreach (var message in messages.EnumerateArray())
        {
            var field = $"messages[{list.Count}]";
            if (message.ValueKind != JsonValueKind.Object)
                throw HttpApiException.BadRequest($"{field} must be an object with role and content, got a JSON {Kind(message)}", field);
            if (!message.TryGetProperty("role", out var role) || role.ValueKind == JsonValueKind.Null)
                throw HttpApiException.BadRequest($"{field}.role is required", field + ".role");
            if (role.ValueKind != JsonValueKind.String)
                throw HttpApiException.BadRequest($"{field}.role must be a string, got a JSON {Kind(role)}", field + ".role");
            var roleName = Text(role, field + ".role");
            if (roleName is not ("system" or "user" or "assistant"))
                throw HttpApiException.BadRequest($"{field}.role must be one of system, user, assistant, got '{roleName}'", field + ".role");
            list.Add(new ChatMessage(roleName, Content(message, field + ".content")));
        }
        return list;
    }

    private static string Content(JsonElement message, string field)
    {
        if (!message.TryGetProperty("content", out var content) || content.ValueKind == JsonValueKind.Null)
            throw HttpApiException.BadRequest($"{field} is required", field);
        if (content.ValueKind == JsonValueKind.String)
            return Text(content, field);
        if (content.ValueKind != JsonValueKind.Array)
            throw HttpApiException.BadRequest($"{field} must be a string or an array of text parts, got a JSON {Kind(content)}", field);
        var texts = new List<string>();
        foreach (var part in content.EnumerateArray())
        {
            var partField = $"{field}[{texts.Count}]";
            if (part.ValueKind != JsonValueKind.Object)
                throw HttpApiException.BadRequest($"{partField} must be an object {{type: \"text\", text}}, got a JSON {Kind(part)}", partField);
            if (!part.TryGetProperty("type", out var type) || type.ValueKind != JsonValueKind.String || type.GetString() != "text")
                throw HttpApiException.BadRequest($"{partField}.type must be \"text\" (this server takes text only)", partField + ".type");
            if (!part.TryGetProperty("text", out var text) || text.ValueKind != JsonValueKind.String)
                throw HttpApiException.BadRequest($"{partField}.text must be a string", partField + ".text");
            texts.Add(Text(text, partField + ".text"));
        }
        return string.Join("\n", texts);
    }

    /// <summary>
    /// A JSON string as text. JSON can carry what is not Unicode text (an escaped lone surrogate such
    /// as "\ud800", or bytes that are not UTF-8), which cannot be tokenized: a 400 naming the field.
    /// </summary>
    private static string Text(JsonElement value, string field)
    {
        try
        {
            return value.GetString()!;
        }
        catch (InvalidOperationException)
        {
            throw HttpApiException.BadRequest($"{field} is not valid Unicode text (a lone surrogate or bytes that are not UTF-8)", field);
        }
    }

    private static string Kind(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Object => "object",
        JsonValueKind.Array => "array",
        JsonValueKind.String => "string",
        JsonValueKind.Number => "number",
        JsonValueKind.True or JsonValueKind.False => "boolean",
        _ => "null",
    };
}
