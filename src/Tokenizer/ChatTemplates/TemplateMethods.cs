using static InferenceServer.Tokenizer.ChatTemplates.TemplateValues;

namespace InferenceServer.Tokenizer.ChatTemplates;

/// <summary>Python methods templates call on values: str.strip(), str.split(), dict.items(), dict.get(), ...</summary>
internal static class TemplateMethods
{
    /// <summary>The method <paramref name="name"/> of <paramref name="target"/> bound to it, or null if it has none.</summary>
    public static TemplateFunction? Bind(object? target, string name) => target switch
    {
        string s => StringMethod(s, name),
        Dictionary<string, object?> map => name switch
        {
            "items" => (_, _) => Items(map),
            "keys" => (_, _) => map.Keys.Cast<object?>().ToList(),
            "values" => (_, _) => map.Values.ToList(),
            "get" => (args, _) => args.Count > 0 && args[0] is string key && map.TryGetValue(key, out var value) ? value : args.Count > 1 ? args[1] : null,
            _ => null,
        },
        List<object?> list => name switch
        {
            "append" => (args, _) =>
            {
                list.Add(args.Count > 0 ? args[0] : null);
                return null;
            },
            "index" => (args, _) => (long)list.FindIndex(x => TemplateValues.Equals(x, args.FirstOrDefault())),
            "count" => (args, _) => (long)list.Count(x => TemplateValues.Equals(x, args.FirstOrDefault())),
            _ => null,
        },
        _ => null,
    };

    public static List<object?> Items(object? value) => value switch
    {
        Dictionary<string, object?> map => map.Select(p => (object?)new List<object?> { p.Key, p.Value }).ToList(),
        _ => throw new ChatTemplateException($"items needs a mapping, got a {TypeName(value)}"),
    };

    private static TemplateFunction? StringMethod(string s, string name) => name switch
    {
        "strip" => (args, _) => Strip(s, args, start: true, end: true),
        "lstrip" => (args, _) => Strip(s, args, start: true, end: false),
        "rstrip" => (args, _) => Strip(s, args, start: false, end: true),
        "upper" => (_, _) => s.ToUpperInvariant(),
        "lower" => (_, _) => s.ToLowerInvariant(),
        "title" => (_, _) => Title(s),
        "capitalize" => (_, _) => s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant(),
        "startswith" => (args, _) => Affix(args, "startswith").Any(p => s.StartsWith(p, StringComparison.Ordinal)),
        "endswith" => (args, _) => Affix(args, "endswith").Any(p => s.EndsWith(p, StringComparison.Ordinal)),
        "split" => (args, kwargs) => Split(s, args.Count > 0 ? args[0] : kwargs.GetValueOrDefault("sep"), args.Count > 1 ? args[1] : kwargs.GetValueOrDefault("maxsplit")),
        "replace" => (args, kwargs) => Replace(s, args, kwargs),
        "find" => (args, _) => (long)s.IndexOf(TemplateRenderer.Text(args.FirstOrDefault(), "find"), StringComparison.Ordinal),
        "count" => (args, _) => CountOf(s, TemplateRenderer.Text(args.FirstOrDefault(), "count")),
        "join" => (args, _) => string.Join(s, TemplateRenderer.Iterate(args.FirstOrDefault()).Select(ToText)),
        "isdigit" => (_, _) => s.Length > 0 && s.All(char.IsDigit),
        "isspace" => (_, _) => s.Length > 0 && s.All(char.IsWhiteSpace),
        _ => null,
    };

    private static string Strip(string s, IReadOnlyList<object?> args, bool start, bool end)
    {
        if (args.Count == 0 || args[0] is null)
            return start && end ? s.Trim() : start ? s.TrimStart() : s.TrimEnd();
        var chars = TemplateRenderer.Text(args[0], "strip").ToCharArray();
        return start && end ? s.Trim(chars) : start ? s.TrimStart(chars) : s.TrimEnd(chars);
    }

    private static IEnumerable<string> Affix(IReadOnlyList<object?> args, string method) => args.FirstOrDefault() switch
    {
        string one => [one],
        List<object?> several => several.Select(x => TemplateRenderer.Text(x, method)),
        var other => throw new ChatTemplateException($"{method} needs a string or a tuple of strings, got a {TypeName(other)}"),
    };

    private static List<object?> Split(string s, object? separator, object? maxSplit)
    {
        var max = maxSplit is null ? -1 : (long)ToDouble(maxSplit);
        if (separator is null)
        {
            // Python's split(): runs of whitespace, no empty strings.
            var words = s.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
            if (max < 0 || words.Length <= max + 1)
                return words.Cast<object?>().ToList();
            var head = s.TrimStart().Split((char[]?)null, (int)max + 1, StringSplitOptions.RemoveEmptyEntries);
            return head.Cast<object?>().ToList();
        }
        var sep = TemplateRenderer.Text(separator, "split");
        if (sep.Length == 0)
            throw new ChatTemplateException("split: empty separator");
        var parts = max < 0 ? s.Split(sep) : s.Split(sep, (int)Math.Min(max + 1, int.MaxValue));
        return parts.Cast<object?>().ToList();
    }

    private static string Replace(string s, IReadOnlyList<object?> args, IReadOnlyDictionary<string, object?> kwargs)
    {
        var old = TemplateRenderer.Text(args.ElementAtOrDefault(0), "replace");
        var replacement = TemplateRenderer.Text(args.ElementAtOrDefault(1), "replace");
        var count = args.Count > 2 ? (long)ToDouble(args[2]) : kwargs.TryGetValue("count", out var c) ? (long)ToDouble(c) : -1;
        if (count < 0)
            return old.Length == 0 ? string.Concat(s.Select(ch => replacement + ch)) + replacement : s.Replace(old, replacement, StringComparison.Ordinal);
        var result = s;
        var from = 0;
        for (var i = 0; i < count; i++)
        {
            var at = result.IndexOf(old, from, StringComparison.Ordinal);
            if (at < 0 || old.Length == 0)
                break;
            result = string.Concat(result.AsSpan(0, at), replacement, result.AsSpan(at + old.Length));
            from = at + replacement.Length;
        }
        return result;
    }

    private static long CountOf(string s, string sub)
    {
        if (sub.Length == 0)
            return s.Length + 1;
        long n = 0;
        for (var at = s.IndexOf(sub, StringComparison.Ordinal); at >= 0; at = s.IndexOf(sub, at + sub.Length, StringComparison.Ordinal))
            n++;
        return n;
    }

    private static string Title(string s)
    {
        var chars = s.ToCharArray();
        var startOfWord = true;
        for (var i = 0; i < chars.Length; i++)
        {
            chars[i] = startOfWord ? char.ToUpperInvariant(chars[i]) : char.ToLowerInvariant(chars[i]);
            startOfWord = !char.IsLetter(chars[i]);
        }
        return new string(chars);
    }
}
