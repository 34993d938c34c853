using System.CommandLine;
using System.Globalization;
using Microsoft.Extensions.Configuration;

namespace InferenceServer.Commands;

/// <summary>A serve setting whose value could not be used, with where it came from.</summary>
internal sealed class SettingException(string message) : Exception(message);

/// <summary>
/// One serve setting, read from (highest first) the command line, the environment
/// (INFERENCESERVER_ + the option name in capitals, dashes as underscores) and the
/// "InferenceServer" section of the configuration file (the option name in PascalCase),
/// else its built-in default.
/// </summary>
internal sealed class Setting<T>
{
    public const string Section = "InferenceServer";

    private readonly T _default;

    /// <param name="plural">For a repeatable option: the name of the whole list in the environment and the file.</param>
    public Setting(string name, string description, T fallback, string? alias = null, string? plural = null)
    {
        var listName = plural ?? name;
        Key = string.Concat(listName.Split('-').Select(part => char.ToUpperInvariant(part[0]) + part[1..]));
        EnvironmentVariable = "INFERENCESERVER_" + listName.Replace('-', '_').ToUpperInvariant();
        _default = fallback;
        Option = alias is null ? new Option<T>("--" + name) : new Option<T>("--" + name, alias);
        Option.Description = $"{description} Env: {EnvironmentVariable}; config: {Section}:{Key}.";
        Option.DefaultValueFactory = _ => fallback;
    }

    public Option<T> Option { get; }

    /// <summary>The key in the configuration file's "InferenceServer" section.</summary>
    public string Key { get; }

    public string EnvironmentVariable { get; }

    public T Resolve(ParseResult parseResult, IConfiguration file)
    {
        if (parseResult.GetResult(Option) is { Implicit: false })
            return parseResult.GetValue(Option)!;
        if (Environment.GetEnvironmentVariable(EnvironmentVariable) is { Length: > 0 } environment)
            return Convert(environment, EnvironmentVariable, environment: true);
        var section = file.GetSection(Section).GetSection(Key);
        if (typeof(T) == typeof(string[]) && section.GetChildren().Any())
            return (T)(object)section.GetChildren().Select(child => child.Value ?? "").ToArray();
        if (section.Value is { } value)
            return Convert(value, $"{Section}:{Key} in the configuration file", environment: false);
        return _default;
    }

    private static T Convert(string value, string source, bool environment)
    {
        if (typeof(T) == typeof(string))
            return (T)(object)value;
        if (typeof(T) == typeof(string[]))
        {
            // Lists in the environment are comma-separated; in the file they are JSON arrays (or one string).
            return (T)(object)(environment ? value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries) : [value]);
        }
        if (typeof(T) == typeof(int) && int.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out var i))
            return (T)(object)i;
        if (typeof(T) == typeof(long) && long.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out var l))
            return (T)(object)l;
        if (typeof(T) == typeof(bool) && bool.TryParse(value, out var b))
            return (T)(object)b;
        var expected = typeof(T) == typeof(bool) ? "true or false" : "an integer";
        throw new SettingException($"{source} is '{value}', which is not {expected}");
    }
}

/// <summary>Finds and reads the configuration file serve uses.</summary>
internal static class ConfigurationFile
{
    public const string DefaultName = "appsettings.json";
    public const string EnvironmentVariable = "INFERENCESERVER_CONFIG";

    public static readonly Option<string?> Option = new("--config")
    {
        Description = $"JSON configuration file (settings under \"{Setting<int>.Section}\", TLS and limits under \"Kestrel\"). "
            + $"Env: {EnvironmentVariable}. Default: {DefaultName} in the current folder, when there is one.",
    };

    /// <summary>The file named on the command line or in the environment (which must exist), else ./appsettings.json if present.</summary>
    public static IConfiguration Load(ParseResult parseResult)
    {
        var named = parseResult.GetValue(Option) ?? Environment.GetEnvironmentVariable(EnvironmentVariable);
        var path = Path.GetFullPath(named ?? DefaultName);
        var builder = new ConfigurationBuilder();
        if (named is not null && !File.Exists(path))
            throw new SettingException($"configuration file '{path}' does not exist");
        if (File.Exists(path))
        {
            try
            {
                builder.AddJsonFile(path, optional: false, reloadOnChange: false);
                return builder.Build();
            }
            catch (Exception e) when (e is FormatException or InvalidDataException)
            {
                throw new SettingException($"configuration file '{path}' is not valid JSON: {e.InnerException?.Message ?? e.Message}");
            }
        }
        return builder.Build();
    }
}
