using System.Text;
using System.Text.Json;
using InferenceServer.Tokenizer.Normalization;
using InferenceServer.Tokenizer.Tests;

namespace InferenceServer.Cli.Tests;

/// <summary>
/// The shipped program runs in invariant globalization mode, without ICU, where .NET's own
/// string.Normalize leaves non-ASCII text as it is. Its tokenizer must still apply a tokenizer.json's
/// Unicode normalizer exactly as Hugging Face's tokenizer does.
/// </summary>
public sealed class InvariantGlobalizationTests
{
    [Fact]
    public void The_program_runs_without_ICU()
    {
        // What makes the next test meaningful: the runtime reads this when the program starts.
        using var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "inference-server.runtimeconfig.json")));
        var properties = config.RootElement.GetProperty("runtimeOptions").GetProperty("configProperties");
        Assert.True(properties.GetProperty("System.Globalization.Invariant").GetBoolean());
    }

    [Fact]
    public void Tokenize_applies_the_NFC_normalizer_like_the_reference()
    {
        // Qwen 3's tokenizer.json normalizes to NFC. The corpus lines NFC changes (decomposed accents,
        // Hangul jamo, singletons...), as the program tokenizes them, against the reference's ids.
        var corpus = TokenizerOracle.Corpus;
        var golden = TokenizerOracle.Golden("qwen3");
        var lines = Enumerable.Range(0, corpus.Count)
            .Where(i => !string.Equals(UnicodeNormalization.Normalize(corpus[i], NormalizationForm.FormC), corpus[i], StringComparison.Ordinal))
            .ToList();
        Assert.True(lines.Count >= 100, $"only {lines.Count} corpus lines change under NFC");

        // JSON escapes keep every character intact on its way through standard input.
        var input = string.Concat(lines.Select(i => JsonSerializer.Serialize(corpus[i]) + "\n"));
        var result = Cli.Run(input, "tokenize", "--tokenizer", TokenizerOracle.TokenizerJsonPath("qwen3"), "--jsonl");
        Assert.True(result.ExitCode == 0, result.Error);
        var outputs = result.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(lines.Count, outputs.Length);

        var failures = new List<string>();
        for (var k = 0; k < lines.Count; k++)
        {
            var ids = JsonSerializer.Deserialize<int[]>(outputs[k])!;
            if (!ids.AsSpan().SequenceEqual(golden[lines[k]].Ids))
                failures.Add($"line {lines[k]}: [{string.Join(",", ids.Take(12))}] instead of [{string.Join(",", golden[lines[k]].Ids.Take(12))}]");
        }
        Assert.True(failures.Count == 0, $"{failures.Count} of {lines.Count} lines differ; first ones:\n{string.Join("\n", failures.Take(8))}");
    }
}
