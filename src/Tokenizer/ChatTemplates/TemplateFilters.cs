using static InferenceServer.Tokenizer.ChatTemplates.TemplateValues;

namespace InferenceServer.Tokenizer.ChatTemplates;

// Filters (value | name(args)) and tests (value is name(args)): the ones chat templates use.
internal sealed partial class TemplateRenderer
{
    private object? ApplyFilter(Expr.Filter filter, object? value, Scope scope)
    {
        var args = filter.Args.Select(a => Evaluate(a, scope)).ToList();
        var kwargs = filter.Kwargs.ToDictionary(k => k.Name, k => Evaluate(k.Value, scope), StringComparer.Ordinal);
        object? Arg(int index, string name, object? fallback) =>
            index < args.Count ? args[index] : kwargs.TryGetValue(name, out var named) ? named : fallback;

        switch (filter.Name)
        {
            case "default" or "d":
                var fallback = Arg(0, "default_value", "");
                var boolean = Truthy(Arg(1, "boolean", false));
                return value is Undefined || (boolean && !Truthy(value)) ? fallback : value;
            case "length" or "count":
                return value switch
                {
                    string s => (long)s.Length,
                    List<object?> list => (long)list.Count,
                    Dictionary<string, object?> map => (long)map.Count,
                    Undefined => 0L,
                    _ => throw new ChatTemplateException($"a {TypeName(value)} has no length"),
                };
            case "string":
                return ToText(value);
            case "safe":
                return value;
            case "list":
                return Iterate(value).ToList();
            case "tojson":
                var indent = Arg(0, "indent", null);
                return ToJson(value, indent is null ? null : (int)ToDouble(indent), Truthy(kwargs.GetValueOrDefault("sort_keys", false)));
            case "items":
                return value is Undefined ? [] : TemplateMethods.Items(value);
            case "first":
                return value switch
                {
                    List<object?> list => list.Count > 0 ? list[0] : Undefined.Instance,
                    string s => s.Length > 0 ? s[..1] : Undefined.Instance,
                    _ => Iterate(value).FirstOrDefault(Undefined.Instance),
                };
            case "last":
                return value switch
                {
                    List<object?> list => list.Count > 0 ? list[^1] : Undefined.Instance,
                    string s => s.Length > 0 ? s[^1..] : Undefined.Instance,
                    _ => throw new ChatTemplateException($"last needs a list or a string, got a {TypeName(value)}"),
                };
            case "reverse":
                return value is string text ? new string(text.Reverse().ToArray()) : Iterate(value).Reverse().ToList();
            case "join":
                var separator = ToText(Arg(0, "d", ""));
                var attribute = kwargs.GetValueOrDefault("attribute") as string;
                return string.Join(separator, Iterate(value).Select(x => ToText(attribute is null ? x : GetAttribute(x, attribute))));
            case "int":
                return value switch
                {
                    long l => l,
                    double d => (long)Math.Truncate(d),
                    bool b => b ? 1L : 0L,
                    string s when long.TryParse(s.Trim(), System.Globalization.CultureInfo.InvariantCulture, out var parsed) => parsed,
                    _ => Arg(0, "default", 0L),
                };
            case "float":
                return value is long or double or bool ? ToDouble(value)
                    : value is string f && double.TryParse(f.Trim(), System.Globalization.CultureInfo.InvariantCulture, out var number) ? number
                    : Arg(0, "default", 0.0);
            case "abs":
                return value is long n ? Math.Abs(n) : Math.Abs(ToDouble(value));
            case "map":
                if (kwargs.GetValueOrDefault("attribute") is string mapped)
                    return Iterate(value).Select(x => GetAttribute(x, mapped) is Undefined && kwargs.TryGetValue("default", out var d) ? d : GetAttribute(x, mapped)).ToList();
                var name = args.Count > 0 ? Text(args[0], "map") : throw new ChatTemplateException("map needs a filter name or attribute=");
                return Iterate(value).Select(x => ApplyFilter(new Expr.Filter(new Expr.Literal(x, filter.Line), name, [], [], filter.Line), x, scope)).ToList();
            case "selectattr" or "rejectattr":
                var select = filter.Name == "selectattr";
                var key = Text(Arg(0, "attribute", null), filter.Name);
                var test = args.Count > 1 ? Text(args[1], filter.Name) : null;
                var testArgs = args.Skip(2).ToList();
                return Iterate(value).Where(x =>
                {
                    var field = GetAttribute(x, key);
                    return (test is null ? Truthy(field) : ApplyTest(test, field, testArgs)) == select;
                }).ToList();
            case "select" or "reject":
                var keep = filter.Name == "select";
                var testName = args.Count > 0 ? Text(args[0], filter.Name) : null;
                return Iterate(value).Where(x => (testName is null ? Truthy(x) : ApplyTest(testName, x, args.Skip(1).ToList())) == keep).ToList();
            case "unique":
                var unique = new List<object?>();
                foreach (var x in Iterate(value))
                {
                    if (!unique.Any(u => TemplateValues.Equals(u, x)))
                        unique.Add(x);
                }
                return unique;
            case "dictsort":
                return TemplateMethods.Items(value).Cast<List<object?>>().OrderBy(p => ToText(p[0]), StringComparer.Ordinal).Cast<object?>().ToList();
            case "indent":
                var width = (int)ToDouble(Arg(0, "width", 4L));
                var first = Truthy(Arg(1, "first", false));
                var pad = new string(' ', width);
                var lines = Text(value, "indent").Split('\n');
                return string.Join("\n", lines.Select((l, i) => (i > 0 || first) && l.Length > 0 ? pad + l : l));
            case "trim" or "upper" or "lower" or "title" or "capitalize" or "replace":
                if (value is Undefined && filter.Name is "trim")
                    return "";
                var method = TemplateMethods.Bind(Text(value, filter.Name), filter.Name == "trim" ? "strip" : filter.Name) as TemplateFunction;
                return method!(args, kwargs);
            default:
                throw new ChatTemplateException($"unknown filter '{filter.Name}'");
        }
    }

    private static bool ApplyTest(string name, object? value, IReadOnlyList<object?> args) => name switch
    {
        "defined" => value is not Undefined,
        "undefined" => value is Undefined,
        "none" => value is null,
        "string" => value is string,
        "number" => value is long or double,
        "integer" => value is long,
        "float" => value is double,
        "boolean" => value is bool,
        "true" => value is true,
        "false" => value is false,
        "mapping" => value is Dictionary<string, object?>,
        "sequence" => value is List<object?> or string or Dictionary<string, object?>,
        "iterable" => value is List<object?> or string or Dictionary<string, object?>,
        "callable" => value is TemplateFunction,
        "odd" => (long)ToDouble(value) % 2 != 0,
        "even" => (long)ToDouble(value) % 2 == 0,
        "divisibleby" => (long)ToDouble(value) % (long)ToDouble(args.FirstOrDefault()) == 0,
        "eq" or "equalto" or "==" => TemplateValues.Equals(value, args.FirstOrDefault()),
        "ne" or "!=" => !TemplateValues.Equals(value, args.FirstOrDefault()),
        "sameas" => TemplateValues.Equals(value, args.FirstOrDefault()),
        "in" => Contains(args.FirstOrDefault(), value),
        "lower" => value is string lower && lower == lower.ToLowerInvariant(),
        "upper" => value is string upper && upper == upper.ToUpperInvariant(),
        _ => throw new ChatTemplateException($"unknown test '{name}'"),
    };
}
