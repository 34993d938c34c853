using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;

namespace InferenceServer.Benchmarks.TokenizerLibraries;

/// <summary>
/// `tokenizer-libraries`: our tokenizer, Microsoft.ML.Tokenizers and Tokenizers.DotNet on every
/// tokenizer of the oracle (tests/fixtures/tokenizer). Exactness: corpus strings whose ids differ
/// from Hugging Face's Rust tokenizer (encode without special tokens). Speed: encoding 1 MB of
/// Python source, median of a few runs after a warm-up, on one thread. Allocations: managed bytes
/// allocated by one such encode (native memory of the Rust library is not counted). Prints a
/// Markdown table (src/Tokenizer/README.md holds one).
/// </summary>
public static class TokenizerLibraryComparison
{
    private const int SpeedRuns = 3;

    /// <param name="names">Tokenizers of the oracle to compare.</param>
    /// <param name="show">How many mismatching strings to print per tokenizer and library (to stderr).</param>
    public static void Run(IReadOnlyList<string> names, int show = 0)
    {
        var golden = TokenizerEncodeBenchmark.OracleFolder();
        var corpus = File.ReadLines(Path.Combine(golden, "corpus.jsonl")).Select(line => JsonSerializer.Deserialize<string>(line)!).ToList();
        var source = TokenizerEncodeBenchmark.SourceText();
        var sourceBytes = Encoding.UTF8.GetByteCount(source);
        Console.WriteLine($"{corpus.Count} corpus strings; speed on {sourceBytes} bytes of Python source, median of {SpeedRuns} encodes");
        Console.WriteLine();
        Console.WriteLine("| tokenizer | library | mismatches | MB/s | allocated per 1 MB encode | notes |");
        Console.WriteLine("| --- | --- | ---: | ---: | ---: | --- |");
        foreach (var name in names)
        {
            var path = Path.Combine(golden, "tokenizers", name, "tokenizer.json");
            var (plain, withSpecial) = ReadGolden(Path.Combine(golden, name + ".jsonl"));
            foreach (var candidate in Candidates(path))
            {
                if (candidate.Encode is null)
                {
                    Console.WriteLine($"| {name} | {candidate.Library} | cannot load | | | {candidate.Notes} |");
                    continue;
                }
                var expected = candidate.AddsSpecialTokens ? withSpecial : plain;
                var mismatches = 0;
                var firstMismatch = -1;
                var failures = 0;
                for (var i = 0; i < corpus.Count; i++)
                {
                    int[] ids;
                    try
                    {
                        ids = candidate.Encode(corpus[i]);
                    }
#pragma warning disable CA1031 // a library that throws on a string counts as a mismatch, whatever it throws
                    catch (Exception e)
#pragma warning restore CA1031
                    {
                        if (failures == 0 && show > 0)
                            Console.Error.WriteLine($"{name} {candidate.Library} line {i} threw {e.GetType().Name}: {e.Message}");
                        failures++;
                        ids = [];
                    }
                    if (!ids.AsSpan().SequenceEqual(expected[i]))
                    {
                        if (mismatches < show)
                            Console.Error.WriteLine($"{name} {candidate.Library} line {i} {JsonSerializer.Serialize(corpus[i])}\n  expected [{string.Join(',', expected[i])}]\n  got      [{string.Join(',', ids)}]");
                        mismatches++;
                        if (firstMismatch < 0)
                            firstMismatch = i;
                    }
                }
                var (seconds, allocated) = Speed(candidate.Encode, source);
                var notes = candidate.Notes;
                if (failures > 0)
                    notes = Join(notes, $"{failures} threw");
                if (firstMismatch >= 0)
                    notes = Join(notes, $"first mismatch: line {firstMismatch}");
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"| {name} | {candidate.Library} | {mismatches} | {sourceBytes / seconds / 1e6:F2} | {allocated / 1e6:F1} MB | {notes} |"));
            }
        }
    }

    /// <param name="AddsSpecialTokens">Compared with encode(add_special_tokens=true): the library has no other mode.</param>
    private sealed record Candidate(string Library, Func<string, int[]>? Encode, string Notes, bool AddsSpecialTokens = false);

    private static IEnumerable<Candidate> Candidates(string path)
    {
        var ours = Tokenizer.Tokenizer.Load(path);
        var ids = new List<int>();
        yield return new Candidate("ours", text =>
        {
            ids.Clear();
            ours.Encode(text, ids);
            return [.. ids];
        }, "");

        foreach (var ml in MicrosoftMlLoader.LoadAll(path))
        {
            yield return ml.Tokenizer is { } mlTokenizer
                ? new Candidate(ml.Library, text => [.. MicrosoftMlLoader.Encode(mlTokenizer, text)], ml.Notes)
                : new Candidate(ml.Library, null, ml.Notes);
        }

        var rust = new Tokenizers.DotNet.Tokenizer(path);
        yield return new Candidate("Tokenizers.DotNet", text => Array.ConvertAll(rust.Encode(text), id => (int)id),
            "Rust tokenizers through a C ABI; always adds special tokens", AddsSpecialTokens: true);
    }

    private static (double Seconds, long Allocated) Speed(Func<string, int[]> encode, string text)
    {
        var warmUp = Stopwatch.StartNew();
        var warmUpBefore = GC.GetAllocatedBytesForCurrentThread();
        encode(text);
        // One encode that slow is the figure: more runs would only take minutes.
        if (warmUp.Elapsed > TimeSpan.FromSeconds(10))
            return (warmUp.Elapsed.TotalSeconds, GC.GetAllocatedBytesForCurrentThread() - warmUpBefore);
        var times = new double[SpeedRuns];
        long allocated = long.MaxValue;
        for (var run = 0; run < SpeedRuns; run++)
        {
            var before = GC.GetAllocatedBytesForCurrentThread();
            var clock = Stopwatch.StartNew();
            encode(text);
            times[run] = clock.Elapsed.TotalSeconds;
            allocated = Math.Min(allocated, GC.GetAllocatedBytesForCurrentThread() - before);
        }
        Array.Sort(times);
        return (times[SpeedRuns / 2], allocated);
    }

    private static (List<int[]> Plain, List<int[]> WithSpecial) ReadGolden(string path)
    {
        var plain = new List<int[]>();
        var withSpecial = new List<int[]>();
        foreach (var line in File.ReadLines(path))
        {
            using var entry = JsonDocument.Parse(line);
            plain.Add([.. entry.RootElement.GetProperty("ids").EnumerateArray().Select(id => id.GetInt32())]);
            withSpecial.Add([.. entry.RootElement.GetProperty("ids_special").EnumerateArray().Select(id => id.GetInt32())]);
        }
        return (plain, withSpecial);
    }

    private static string Join(string a, string b) => a.Length == 0 ? b : $"{a}; {b}";
}
