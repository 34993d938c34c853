using System.Globalization;

namespace InferenceServer.Peers;

/// <summary>"--name value" pairs after the command; a missing required one or a malformed number is a clear error.</summary>
internal sealed class Arguments
{
    private readonly Dictionary<string, string> _values = new(StringComparer.Ordinal);

    public Arguments(IEnumerable<string> arguments)
    {
        using var e = arguments.GetEnumerator();
        while (e.MoveNext())
        {
            var name = e.Current;
            if (!name.StartsWith("--", StringComparison.Ordinal))
                throw new UsageException($"expected an option, got '{name}'");
            if (!e.MoveNext())
                throw new UsageException($"{name} needs a value");
            _values[name] = e.Current;
        }
    }

    public string Text(string name) => _values.TryGetValue(name, out var value) ? value : throw new UsageException($"missing {name}");

    public string? OptionalText(string name) => _values.GetValueOrDefault(name);

    public int Int(string name, int? fallback = null)
    {
        if (!_values.TryGetValue(name, out var value))
            return fallback ?? throw new UsageException($"missing {name}");
        return int.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out var number) && number >= 0
            ? number
            : throw new UsageException($"{name} must be a whole number, got '{value}'");
    }

    public int[] Ints(string name) =>
        [.. Text(name).Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(part =>
            int.TryParse(part, NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) && n > 0
                ? n
                : throw new UsageException($"{name} takes positive whole numbers separated by commas, got '{part}'"))];
}

internal sealed class UsageException(string message) : Exception(message);
