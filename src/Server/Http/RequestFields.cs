using System.Text.Json;

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
