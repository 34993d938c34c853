using System.CommandLine;
using System.Text;
using System.Text.Json;
using InferenceServer.Tokenizer;

namespace InferenceServer.Commands;

/// <summary>
/// tokenize and detokenize: count and inspect tokens with a model's own tokenizer. Text comes from
/// --text or standard input (read exactly, trailing newline included); --jsonl handles one JSON
/// value per line so many texts go through one process.
/// </summary>
internal static class TokenizeCommands
{
    private static Option<string> TokenizerOption() => new("--tokenizer", "-t")
    {
        Description = "A tokenizer.json, or a model folder that holds one.",
        Required = true,
    };

    public static Command CreateTokenize()
    {
        var tokenizer = TokenizerOption();
        var text = new Option<string?>("--text") { Description = "The text to tokenize (default: standard input)." };
        var count = new Option<bool>("--count") { Description = "Print the number of tokens only." };
        var jsonl = new Option<bool>("--jsonl") { Description = "Read one JSON string per line; write one JSON array of ids (or a count) per line." };
        var special = new Option<bool>("--add-special-tokens") { Description = "Apply the tokenizer's post-processor (e.g. BOS)." };
        var command = new Command("tokenize", "Print the token ids of a text as a JSON array.") { tokenizer, text, count, jsonl, special };
        command.SetAction(parseResult => Run(() =>
        {
            var t = Tokenizer.Tokenizer.Load(parseResult.GetValue(tokenizer)!);
            var addSpecial = parseResult.GetValue(special);
            var countOnly = parseResult.GetValue(count);
            var output = Console.Out;
            if (parseResult.GetValue(jsonl))
            {
                var lineNumber = 0;
                using var input = StandardInput();
                while (input.ReadLine() is { } line)
                {
                    lineNumber++;
                    var value = JsonSerializer.Deserialize(line, CommandJsonContext.Default.String)
                        ?? throw new FormatException($"line {lineNumber}: expected a JSON string");
                    WriteIds(output, t.Encode(value, addSpecial), countOnly);
                }
                return 0;
            }
            var source = parseResult.GetValue(text) ?? ReadAllStandardInput();
            WriteIds(output, t.Encode(source, addSpecial), countOnly);
            return 0;
        }));
        return command;
    }

    public static Command CreateDetokenize()
    {
        var tokenizer = TokenizerOption();
        var ids = new Option<string?>("--ids") { Description = "Token ids: a JSON array or comma-separated (default: standard input)." };
        var jsonl = new Option<bool>("--jsonl") { Description = "Read one JSON array of ids per line; write one JSON string per line." };
        var skip = new Option<bool>("--skip-special-tokens") { Description = "Leave special tokens out of the text." };
        var command = new Command("detokenize", "Print the text of token ids.") { tokenizer, ids, jsonl, skip };
        command.SetAction(parseResult => Run(() =>
        {
            var t = Tokenizer.Tokenizer.Load(parseResult.GetValue(tokenizer)!);
            var skipSpecial = parseResult.GetValue(skip);
            if (parseResult.GetValue(jsonl))
            {
                using var input = StandardInput();
                var lineNumber = 0;
                while (input.ReadLine() is { } line)
                {
                    lineNumber++;
                    var text = t.Decode(ParseIds(line, $"line {lineNumber}"), skipSpecial);
                    Console.Out.WriteLine(JsonSerializer.Serialize(text, ReadableJson.String));
                }
                return 0;
            }
            var decoded = t.Decode(ParseIds(parseResult.GetValue(ids) ?? ReadAllStandardInput(), "ids"), skipSpecial);
            Console.Out.Write(decoded);
            Console.Out.Flush();
            return 0;
        }));
        return command;
    }

    private static int Run(Func<int> action)
    {
        try
        {
            return action();
        }
        catch (Exception e) when (e is TokenizerLoadException or FormatException or JsonException or IOException)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 1;
        }
    }

    private static void WriteIds(TextWriter output, int[] ids, bool countOnly) =>
        output.WriteLine(countOnly ? ids.Length.ToString(System.Globalization.CultureInfo.InvariantCulture) : JsonSerializer.Serialize(ids, CommandJsonContext.Default.Int32Array));

    private static int[] ParseIds(string text, string what)
    {
        var trimmed = text.Trim();
        if (trimmed.StartsWith('['))
            return JsonSerializer.Deserialize(trimmed, CommandJsonContext.Default.Int32Array) ?? throw new FormatException($"{what}: expected a JSON array of ids");
        return trimmed.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(p => int.TryParse(p, System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out var id)
                ? id
                : throw new FormatException($"{what}: '{p}' is not a token id"))
            .ToArray();
    }

    private static StreamReader StandardInput() => new(Console.OpenStandardInput(), new UTF8Encoding(false));

    private static string ReadAllStandardInput()
    {
        using var input = StandardInput();
        return input.ReadToEnd();
    }
}

/// <summary>JSON output people read: non-ASCII text and quotes as themselves, not as \u escapes.</summary>
internal static class ReadableJson
{
    private static readonly JsonSerializerOptions Options = new()
    {
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        TypeInfoResolver = CommandJsonContext.Default,
    };

    public static System.Text.Json.Serialization.Metadata.JsonTypeInfo<string> String { get; } =
        (System.Text.Json.Serialization.Metadata.JsonTypeInfo<string>)Options.GetTypeInfo(typeof(string));
}

[System.Text.Json.Serialization.JsonSerializable(typeof(string))]
[System.Text.Json.Serialization.JsonSerializable(typeof(int[]))]
internal sealed partial class CommandJsonContext : System.Text.Json.Serialization.JsonSerializerContext;
