using System.Globalization;
using System.Text;
using System.Text.Json;

namespace InferenceServer.Tokenizer.ChatTemplates;

/// <summary>A name the context does not define: renders as nothing, is false, and fails most operations.</summary>
internal sealed class Undefined
{
    public static readonly Undefined Instance = new();

    private Undefined()
    {
    }
}

/// <summary>namespace(...): the one object a template may assign attributes to ({% set ns.x = ... %}).</summary>
internal sealed class TemplateNamespace
{
    public Dictionary<string, object?> Values { get; } = new(StringComparer.Ordinal);
}

/// <summary>A callable value: a global (raise_exception, namespace, range), a bound method or a macro.</summary>
internal delegate object? TemplateFunction(IReadOnlyList<object?> args, IReadOnlyDictionary<string, object?> kwargs);

/// <summary>
/// Values while rendering are plain objects: null (none), <see cref="Undefined"/>, bool, long, double,
/// string, List&lt;object?&gt; (lists and tuples), Dictionary&lt;string, object?&gt; (mappings, in insertion
/// order), <see cref="TemplateNamespace"/> and <see cref="TemplateFunction"/>.
/// </summary>
internal static class TemplateValues
{
    public static bool IsUndefined(object? value) => value is Undefined;

    public static bool Truthy(object? value) => value switch
    {
        null or Undefined => false,
        bool b => b,
        long l => l != 0,
        double d => d != 0,
        string s => s.Length > 0,
        List<object?> list => list.Count > 0,
        Dictionary<string, object?> map => map.Count > 0,
        _ => true,
    };

    /// <summary>The text {{ value }} writes: Python's str() for the value (none as "None", true as "True").</summary>
    public static string ToText(object? value) => value switch
    {
        Undefined => "",
        null => "None",
        string s => s,
        bool b => b ? "True" : "False",
        long l => l.ToString(CultureInfo.InvariantCulture),
        double d => FloatText(d),
        List<object?> or Dictionary<string, object?> or TemplateNamespace => Repr(value),
        TemplateFunction => "<function>",
        _ => value.ToString() ?? "",
    };

    private static string FloatText(double d) =>
        double.IsInteger(d) && Math.Abs(d) < 1e16 ? d.ToString("0.0", CultureInfo.InvariantCulture) : d.ToString("R", CultureInfo.InvariantCulture);

    /// <summary>Python's repr() of lists and dicts (strings in single quotes).</summary>
    private static string Repr(object? value)
    {
        switch (value)
        {
            case string s:
                return "'" + s.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("'", "\\'", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal) + "'";
            case List<object?> list:
                return "[" + string.Join(", ", list.Select(Repr)) + "]";
            case Dictionary<string, object?> map:
                return "{" + string.Join(", ", map.Select(p => Repr(p.Key) + ": " + Repr(p.Value))) + "}";
            case TemplateNamespace ns:
                return "<Namespace " + Repr(ns.Values) + ">";
            default:
                return ToText(value);
        }
    }

    public static string TypeName(object? value) => value switch
    {
        Undefined => "undefined",
        null => "none",
        bool => "boolean",
        long => "integer",
        double => "float",
        string => "string",
        List<object?> => "list",
        Dictionary<string, object?> => "dict",
        TemplateNamespace => "namespace",
        TemplateFunction => "function",
        _ => value.GetType().Name,
    };

    public static new bool Equals(object? a, object? b) => (a, b) switch
    {
        (null, null) or (Undefined, Undefined) => true,
        (long x, long y) => x == y,
        (long or double, long or double) => ToDouble(a) == ToDouble(b),
        (bool x, bool y) => x == y,
        (string x, string y) => string.Equals(x, y, StringComparison.Ordinal),
        (List<object?> x, List<object?> y) => x.Count == y.Count && x.Zip(y).All(p => Equals(p.First, p.Second)),
        (Dictionary<string, object?> x, Dictionary<string, object?> y) =>
            x.Count == y.Count && x.All(p => y.TryGetValue(p.Key, out var v) && Equals(p.Value, v)),
        _ => ReferenceEquals(a, b),
    };

    public static double ToDouble(object? value) => value switch
    {
        long l => l,
        double d => d,
        bool b => b ? 1 : 0,
        _ => throw new ChatTemplateException($"expected a number, got {TypeName(value)}"),
    };

    /// <summary>Values from JSON (a request's messages, a tool's schema): objects keep their key order.</summary>
    public static object? FromJson(JsonElement element) => element.ValueKind switch
    {
        JsonValueKind.String => element.GetString(),
        JsonValueKind.Number => element.TryGetInt64(out var l) ? l : element.GetDouble(),
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        JsonValueKind.Array => element.EnumerateArray().Select(FromJson).ToList(),
        JsonValueKind.Object => element.EnumerateObject().Aggregate(new Dictionary<string, object?>(StringComparer.Ordinal), (map, p) =>
        {
            map[p.Name] = FromJson(p.Value);
            return map;
        }),
        _ => null,
    };

    /// <summary>
    /// The tojson filter as transformers defines it: Python's json.dumps with ensure_ascii=False,
    /// separators ", " and ": " (or "," and ": " with an indent), keys in their order unless sorted.
    /// </summary>
    public static string ToJson(object? value, int? indent = null, bool sortKeys = false)
    {
        var text = new StringBuilder();
        WriteJson(text, value, indent, sortKeys, 0);
        return text.ToString();
    }

    private static void WriteJson(StringBuilder text, object? value, int? indent, bool sortKeys, int depth)
    {
        var itemSeparator = indent is null ? ", " : ",";
        switch (value)
        {
            case null or Undefined:
                text.Append("null");
                break;
            case bool b:
                text.Append(b ? "true" : "false");
                break;
            case long or double:
                text.Append(value is double d ? FloatText(d) : ToText(value));
                break;
            case string s:
                WriteJsonString(text, s);
                break;
            case List<object?> list:
                text.Append('[');
                for (var i = 0; i < list.Count; i++)
                {
                    if (i > 0)
                        text.Append(itemSeparator);
                    NewLine(text, indent, depth + 1);
                    WriteJson(text, list[i], indent, sortKeys, depth + 1);
                }
                if (list.Count > 0)
                    NewLine(text, indent, depth);
                text.Append(']');
                break;
            case Dictionary<string, object?> or TemplateNamespace:
                var map = value as Dictionary<string, object?> ?? ((TemplateNamespace)value).Values;
                IEnumerable<KeyValuePair<string, object?>> pairs = sortKeys ? map.OrderBy(p => p.Key, StringComparer.Ordinal) : map;
                text.Append('{');
                var first = true;
                foreach (var (key, item) in pairs)
                {
                    if (!first)
                        text.Append(itemSeparator);
                    first = false;
                    NewLine(text, indent, depth + 1);
                    WriteJsonString(text, key);
                    text.Append(": ");
                    WriteJson(text, item, indent, sortKeys, depth + 1);
                }
                if (map.Count > 0)
                    NewLine(text, indent, depth);
                text.Append('}');
                break;
            default:
                throw new ChatTemplateException($"a {TypeName(value)} cannot be written as JSON");
        }
    }

    private static void NewLine(StringBuilder text, int? indent, int depth)
    {
        if (indent is { } n)
            text.Append('\n').Append(' ', n * depth);
    }

    private static void WriteJsonString(StringBuilder text, string s)
    {
        text.Append('"');
        foreach (var c in s)
        {
            switch (c)
            {
                case '"': text.Append("\\\""); break;
                case '\\': text.Append("\\\\"); break;
                case '\n': text.Append("\\n"); break;
                case '\r': text.Append("\\r"); break;
                case '\t': text.Append("\\t"); break;
                case '\b': text.Append("\\b"); break;
                case '\f': text.Append("\\f"); break;
                case < ' ': text.Append(CultureInfo.InvariantCulture, $"\\u{(int)c:x4}"); break;
                default: text.Append(c); break;
            }
        }
        text.Append('"');
    }
}
