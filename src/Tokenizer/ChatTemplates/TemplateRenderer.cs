using System.Text;
using static InferenceServer.Tokenizer.ChatTemplates.TemplateValues;

namespace InferenceServer.Tokenizer.ChatTemplates;

/// <summary>Variables of one scope; a for loop and a macro call open a new one (so a set inside them stays there).</summary>
internal sealed class Scope(Scope? parent)
{
    private readonly Dictionary<string, object?> _values = new(StringComparer.Ordinal);

    public object? Get(string name)
    {
        for (var scope = this; scope is not null; scope = scope.Parent)
        {
            if (scope._values.TryGetValue(name, out var value))
                return value;
        }
        return Undefined.Instance;
    }

    public void Set(string name, object? value) => _values[name] = value;

    public Scope? Parent { get; } = parent;
}

/// <summary>Evaluates a parsed template: statements write to the output, expressions give values (see <see cref="TemplateValues"/>).</summary>
internal sealed partial class TemplateRenderer
{
    private sealed class BreakSignal : Exception;

    private sealed class ContinueSignal : Exception;

    // A template's loops are over its messages; this bounds a template that would loop without end (range of a huge number).
    private const int MaxOutputChars = 64 * 1024 * 1024;

    private readonly StringBuilder _output = new();

    public static string Render(IReadOnlyList<Node> template, IReadOnlyDictionary<string, object?> context)
    {
        var globals = new Scope(null);
        globals.Set("raise_exception", (TemplateFunction)RaiseException);
        globals.Set("namespace", (TemplateFunction)MakeNamespace);
        globals.Set("range", (TemplateFunction)Range);
        var scope = new Scope(globals);
        foreach (var (name, value) in context)
            scope.Set(name, value);
        var renderer = new TemplateRenderer();
        try
        {
            renderer.Execute(template, scope);
        }
        catch (Exception e) when (e is BreakSignal or ContinueSignal)
        {
            throw new ChatTemplateException("break or continue outside a loop");
        }
        return renderer._output.ToString();
    }

    private void Execute(IReadOnlyList<Node> nodes, Scope scope)
    {
        foreach (var node in nodes)
        {
            try
            {
                Execute(node, scope);
            }
            catch (ChatTemplateException e) when (!e.Message.StartsWith("line ", StringComparison.Ordinal) && !e.RaisedByTemplate)
            {
                throw new ChatTemplateException($"line {node.Line}: {e.Message}", e);
            }
            if (_output.Length > MaxOutputChars)
                throw new ChatTemplateException($"line {node.Line}: the rendered prompt is larger than {MaxOutputChars} characters");
        }
    }

    private void Execute(Node node, Scope scope)
    {
        switch (node)
        {
            case Node.Text text:
                _output.Append(text.Value);
                break;
            case Node.Output output:
                _output.Append(ToText(Evaluate(output.Value, scope)));
                break;
            case Node.If branch:
                foreach (var (condition, body) in branch.Branches)
                {
                    if (Truthy(Evaluate(condition, scope)))
                    {
                        Execute(body, scope);
                        return;
                    }
                }
                Execute(branch.Else, scope);
                break;
            case Node.For loop:
                ExecuteFor(loop, scope);
                break;
            case Node.Set set:
                ExecuteSet(set, scope);
                break;
            case Node.Macro macro:
                scope.Set(macro.Name, MakeMacro(macro, scope));
                break;
            case Node.Break:
                throw new BreakSignal();
            case Node.Continue:
                throw new ContinueSignal();
        }
    }

    private void ExecuteFor(Node.For loop, Scope outer)
    {
        var scope = new Scope(outer);
        var source = Evaluate(loop.Iterable, scope);
        var items = new List<object?>();
        foreach (var item in Iterate(source))
        {
            if (loop.Filter is not null)
            {
                Bind(loop.Targets, item, scope);
                if (!Truthy(Evaluate(loop.Filter, scope)))
                    continue;
            }
            items.Add(item);
        }
        if (items.Count == 0)
        {
            Execute(loop.Else, scope);
            return;
        }
        for (var i = 0; i < items.Count; i++)
        {
            scope.Set("loop", new Dictionary<string, object?>(StringComparer.Ordinal)
            {
                ["index"] = (long)i + 1,
                ["index0"] = (long)i,
                ["revindex"] = (long)(items.Count - i),
                ["revindex0"] = (long)(items.Count - i - 1),
                ["first"] = i == 0,
                ["last"] = i == items.Count - 1,
                ["length"] = (long)items.Count,
                ["previtem"] = i > 0 ? items[i - 1] : Undefined.Instance,
                ["nextitem"] = i < items.Count - 1 ? items[i + 1] : Undefined.Instance,
            });
            Bind(loop.Targets, items[i], scope);
            try
            {
                Execute(loop.Body, scope);
            }
            catch (ContinueSignal)
            {
            }
            catch (BreakSignal)
            {
                break;
            }
        }
    }

    private static void Bind(IReadOnlyList<string> targets, object? value, Scope scope)
    {
        if (targets.Count == 1)
        {
            scope.Set(targets[0], value);
            return;
        }
        if (value is not List<object?> list || list.Count != targets.Count)
            throw new ChatTemplateException($"cannot unpack a {TypeName(value)} into {targets.Count} names");
        for (var i = 0; i < targets.Count; i++)
            scope.Set(targets[i], list[i]);
    }

    private void ExecuteSet(Node.Set set, Scope scope)
    {
        object? value;
        if (set.Body is not null)
        {
            var start = _output.Length;
            Execute(set.Body, scope);
            value = _output.ToString(start, _output.Length - start);
            _output.Length = start;
        }
        else
            value = Evaluate(set.Value!, scope);
        if (set.Attribute is null)
        {
            Bind(set.Targets, value, scope);
            return;
        }
        if (scope.Get(set.Targets[0]) is not TemplateNamespace ns)
            throw new ChatTemplateException($"cannot set an attribute of '{set.Targets[0]}': only a namespace() takes attributes");
        ns.Values[set.Attribute] = value;
    }

    private TemplateFunction MakeMacro(Node.Macro macro, Scope defined) => (args, kwargs) =>
    {
        if (args.Count > macro.Parameters.Count)
            throw new ChatTemplateException($"macro '{macro.Name}' takes {macro.Parameters.Count} arguments, got {args.Count}");
        var scope = new Scope(defined);
        for (var i = 0; i < macro.Parameters.Count; i++)
        {
            var (name, fallback) = macro.Parameters[i];
            scope.Set(name, i < args.Count ? args[i]
                : kwargs.TryGetValue(name, out var named) ? named
                : fallback is not null ? Evaluate(fallback, scope) : Undefined.Instance);
        }
        var start = _output.Length;
        Execute(macro.Body, scope);
        var text = _output.ToString(start, _output.Length - start);
        _output.Length = start;
        return text;
    };

    private object? Evaluate(Expr expr, Scope scope)
    {
        switch (expr)
        {
            case Expr.Literal literal:
                return literal.Value;
            case Expr.Variable name:
                return scope.Get(name.Id);
            case Expr.ListLiteral list:
                return list.Items.Select(item => Evaluate(item, scope)).ToList();
            case Expr.DictLiteral dict:
                var map = new Dictionary<string, object?>(StringComparer.Ordinal);
                foreach (var (key, value) in dict.Items)
                    map[ToText(Evaluate(key, scope))] = Evaluate(value, scope);
                return map;
            case Expr.Attribute attribute:
                return GetAttribute(Evaluate(attribute.Target, scope), attribute.Name);
            case Expr.Item item:
                return GetItem(Evaluate(item.Target, scope), Evaluate(item.Key, scope));
            case Expr.Slice slice:
                return Slice(Evaluate(slice.Target, scope), Optional(slice.Start, scope), Optional(slice.Stop, scope), Optional(slice.Step, scope));
            case Expr.Call call:
                var callee = Evaluate(call.Callee, scope);
                if (callee is not TemplateFunction function)
                    throw new ChatTemplateException($"{Describe(call.Callee)} is not callable (it is a {TypeName(callee)})");
                var args = call.Args.Select(a => Evaluate(a, scope)).ToList();
                var kwargs = call.Kwargs.ToDictionary(k => k.Name, k => Evaluate(k.Value, scope), StringComparer.Ordinal);
                return function(args, kwargs);
            case Expr.Filter filter:
                return ApplyFilter(filter, Evaluate(filter.Value, scope), scope);
            case Expr.Test test:
                var result = ApplyTest(test.Name, Evaluate(test.Value, scope), test.Args.Select(a => Evaluate(a, scope)).ToList());
                return result != test.Negated;
            case Expr.Unary unary:
                var operand = Evaluate(unary.Operand, scope);
                return unary.Op switch
                {
                    "not" => !Truthy(operand),
                    "-" => operand is long l ? (object)(-l) : -ToDouble(operand),
                    _ => operand is long or double ? operand : (object)ToDouble(operand),
                };
            case Expr.Binary binary:
                return EvaluateBinary(binary, scope);
            case Expr.Conditional conditional:
                return Truthy(Evaluate(conditional.Condition, scope)) ? Evaluate(conditional.Then, scope)
                    : conditional.Else is null ? Undefined.Instance : Evaluate(conditional.Else, scope);
            default:
                throw new ChatTemplateException($"cannot evaluate {expr.GetType().Name}");
        }
    }

    private object? Optional(Expr? expr, Scope scope) => expr is null ? null : Evaluate(expr, scope);

    private static string Describe(Expr expr) => expr switch
    {
        Expr.Variable name => $"'{name.Id}'",
        Expr.Attribute attribute => $"'{attribute.Name}'",
        _ => "the value",
    };

    private object? EvaluateBinary(Expr.Binary binary, Scope scope)
    {
        var left = Evaluate(binary.Left, scope);
        switch (binary.Op)
        {
            case "and":
                return Truthy(left) ? Evaluate(binary.Right, scope) : left;
            case "or":
                return Truthy(left) ? left : Evaluate(binary.Right, scope);
        }
        var right = Evaluate(binary.Right, scope);
        switch (binary.Op)
        {
            case "==":
                return TemplateValues.Equals(left, right);
            case "!=":
                return !TemplateValues.Equals(left, right);
            case "~":
                return ToText(left) + ToText(right);
            case "in":
                return Contains(right, left);
            case "not in":
                return !Contains(right, left);
        }
        if (left is Undefined || right is Undefined)
            throw new ChatTemplateException($"cannot apply '{binary.Op}' to an undefined value ({Describe(left is Undefined ? binary.Left : binary.Right)} is not defined)");
        switch (binary.Op, left, right)
        {
            case ("+", string a, string b):
                return a + b;
            case ("+", List<object?> a, List<object?> b):
                return a.Concat(b).ToList();
            case ("*", string s, long n):
                return string.Concat(Enumerable.Repeat(s, (int)Math.Clamp(n, 0, MaxOutputChars / Math.Max(1, s.Length))));
            case ("<" or ">" or "<=" or ">=", string a, string b):
                return Compare(binary.Op, string.CompareOrdinal(a, b));
            case (_, long or double or bool, long or double or bool):
                return Arithmetic(binary.Op, left, right);
            default:
                throw new ChatTemplateException($"cannot apply '{binary.Op}' to a {TypeName(left)} and a {TypeName(right)}");
        }
    }

    private static bool Compare(string op, int order) => op switch
    {
        "<" => order < 0,
        ">" => order > 0,
        "<=" => order <= 0,
        _ => order >= 0,
    };

    private static object Arithmetic(string op, object? left, object? right)
    {
        if (left is long a && right is long b && op is "+" or "-" or "*" or "//" or "%")
        {
            if (op is "//" or "%" && b == 0)
                throw new ChatTemplateException("division by zero");
            return op switch
            {
                "+" => a + b,
                "-" => a - b,
                "*" => a * b,
                "//" => (long)Math.Floor((double)a / b),
                _ => ((a % b) + b) % b,
            };
        }
        var x = ToDouble(left);
        var y = ToDouble(right);
        return op switch
        {
            "+" => x + y,
            "-" => x - y,
            "*" => x * y,
            "/" => y == 0 ? throw new ChatTemplateException("division by zero") : x / y,
            "//" => Math.Floor(x / y),
            "%" => x - (y * Math.Floor(x / y)),
            "**" => Math.Pow(x, y) is var p && left is long && right is long && y >= 0 ? (object)(long)p : Math.Pow(x, y),
            _ => Compare(op, x.CompareTo(y)),
        };
    }

    private static bool Contains(object? container, object? item) => container switch
    {
        string s => item is string sub ? s.Contains(sub, StringComparison.Ordinal) : throw new ChatTemplateException($"'in <string>' needs a string on the left, got a {TypeName(item)}"),
        List<object?> list => list.Any(x => TemplateValues.Equals(x, item)),
        Dictionary<string, object?> map => item is string key && map.ContainsKey(key),
        TemplateNamespace ns => item is string key && ns.Values.ContainsKey(key),
        Undefined => false,
        _ => throw new ChatTemplateException($"cannot look for a value in a {TypeName(container)}"),
    };

    private static object? GetItem(object? target, object? key)
    {
        switch (target, key)
        {
            case (List<object?> list, long index):
                var i = index < 0 ? list.Count + index : index;
                return i >= 0 && i < list.Count ? list[(int)i] : Undefined.Instance;
            case (string s, long index):
                var j = index < 0 ? s.Length + index : index;
                return j >= 0 && j < s.Length ? s[(int)j].ToString() : Undefined.Instance;
            case (_, string name):
                return GetAttribute(target, name);
            case (Undefined, _):
                throw new ChatTemplateException("cannot index an undefined value");
            default:
                return Undefined.Instance;
        }
    }

    /// <summary>a.b: a mapping's key, a namespace's attribute, or a method of a string, list or mapping.</summary>
    private static object? GetAttribute(object? target, string name)
    {
        switch (target)
        {
            case Dictionary<string, object?> map:
                if (map.TryGetValue(name, out var value))
                    return value;
                return (object?)TemplateMethods.Bind(map, name) ?? Undefined.Instance;
            case TemplateNamespace ns:
                return ns.Values.TryGetValue(name, out var attribute) ? attribute : Undefined.Instance;
            case Undefined:
                throw new ChatTemplateException($"cannot read '{name}' of an undefined value");
            case null:
                throw new ChatTemplateException($"cannot read '{name}' of none");
            default:
                return (object?)TemplateMethods.Bind(target, name) ?? Undefined.Instance;
        }
    }

    private static object Slice(object? target, object? start, object? stop, object? step)
    {
        var by = step is null ? 1 : (long)ToDouble(step);
        if (by == 0)
            throw new ChatTemplateException("a slice step cannot be zero");
        var count = target switch
        {
            List<object?> list => list.Count,
            string s => s.Length,
            _ => throw new ChatTemplateException($"cannot slice a {TypeName(target)}"),
        };
        // Python's slice.indices.
        long Clamp(object? bound, long fallback)
        {
            if (bound is null)
                return fallback;
            var v = (long)ToDouble(bound);
            if (v < 0)
                v += count;
            return by > 0 ? Math.Clamp(v, 0, count) : Math.Clamp(v, -1, count - 1);
        }
        var from = Clamp(start, by > 0 ? 0 : count - 1);
        var to = Clamp(stop, by > 0 ? count : -1);
        var indices = new List<int>();
        for (var i = from; by > 0 ? i < to : i > to; i += by)
            indices.Add((int)i);
        return target is string text
            ? string.Concat(indices.Select(i => text[i]))
            : indices.Select(i => ((List<object?>)target!)[i]).ToList();
    }

    internal static IEnumerable<object?> Iterate(object? value) => value switch
    {
        List<object?> list => list.ToList(),
        Dictionary<string, object?> map => map.Keys.Cast<object?>().ToList(),
        string s => s.Select(c => (object?)c.ToString()).ToList(),
        Undefined => [],
        _ => throw new ChatTemplateException($"cannot loop over a {TypeName(value)}"),
    };

    private static object? RaiseException(IReadOnlyList<object?> args, IReadOnlyDictionary<string, object?> kwargs) =>
        throw new ChatTemplateException(args.Count > 0 ? ToText(args[0]) : "the chat template raised an exception") { RaisedByTemplate = true };

    private static object MakeNamespace(IReadOnlyList<object?> args, IReadOnlyDictionary<string, object?> kwargs)
    {
        var ns = new TemplateNamespace();
        foreach (var arg in args)
        {
            if (arg is Dictionary<string, object?> map)
            {
                foreach (var (key, value) in map)
                    ns.Values[key] = value;
            }
        }
        foreach (var (key, value) in kwargs)
            ns.Values[key] = value;
        return ns;
    }

    private static object Range(IReadOnlyList<object?> args, IReadOnlyDictionary<string, object?> kwargs)
    {
        var numbers = args.Select(a => (long)ToDouble(a)).ToArray();
        var (start, stop, step) = numbers.Length switch
        {
            1 => (0L, numbers[0], 1L),
            2 => (numbers[0], numbers[1], 1L),
            3 => (numbers[0], numbers[1], numbers[2]),
            _ => throw new ChatTemplateException("range takes 1 to 3 arguments"),
        };
        if (step == 0)
            throw new ChatTemplateException("range's step cannot be zero");
        var result = new List<object?>();
        for (var i = start; step > 0 ? i < stop : i > stop; i += step)
        {
            if (result.Count >= 1_000_000)
                throw new ChatTemplateException("range is too long");
            result.Add(i);
        }
        return result;
    }

    internal static string Text(object? value, string what) =>
        value as string ?? throw new ChatTemplateException($"{what} needs a string, got a {TypeName(value)}");
}
