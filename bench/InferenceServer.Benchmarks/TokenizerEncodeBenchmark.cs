using System.Diagnostics;
using System.Text;
using BenchmarkDotNet.Attributes;

namespace InferenceServer.Benchmarks;

/// <summary>
/// Encodes 1 MB of real source code (the Python standard library this machine ships, files in
/// name order) with real tokenizer.json files. Setup also times Hugging Face's Rust tokenizer
/// (through its Node binding, single-threaded) on the same text and prints its throughput, so
/// one run gives both figures.
/// </summary>
public class TokenizerEncodeBenchmark
{
    private const int TextBytes = 1 << 20;
    private Tokenizer.Tokenizer _tokenizer = null!;
    private string _text = "";
    private List<int> _ids = [];

    [Params("qwen3", "llama3", "llama2")]
    public string Name { get; set; } = "";

    [GlobalSetup]
    public void Setup()
    {
        var oracle = BenchModels.RepoFile("tests/fixtures/tokenizer/oracle.sh");
        var golden = OracleFolder();
        _tokenizer = Tokenizer.Tokenizer.Load(Path.Combine(golden, "tokenizers", Name, "tokenizer.json"));
        _text = SourceText();
        _ids = new List<int>(_text.Length);

        var file = Path.Combine(Path.GetTempPath(), "inferenceserver-bench", "tokenizer-source.txt");
        Directory.CreateDirectory(Path.GetDirectoryName(file)!);
        File.WriteAllText(file, _text, new UTF8Encoding(false));
        var rust = RunScript(oracle, ["--bench", file, Name]).Trim();
        Console.WriteLine($"// Rust tokenizer ({Name}, same text): {rust}");
        _ids.Clear();
        _tokenizer.Encode(_text, _ids);
        Console.WriteLine($"// this tokenizer: {_ids.Count} tokens for {Encoding.UTF8.GetByteCount(_text)} bytes");
    }

    [Benchmark]
    public int Encode()
    {
        _ids.Clear();
        _tokenizer.Encode(_text, _ids);
        return _ids.Count;
    }

    /// <summary>The oracle's golden folder (tests/fixtures/tokenizer/README.md), made on first use.</summary>
    public static string OracleFolder() => RunScript(BenchModels.RepoFile("tests/fixtures/tokenizer/oracle.sh"), []).Trim();

    /// <summary>1 MB of Python source, cut on a character boundary.</summary>
    public static string SourceText()
    {
        var folder = Directory.GetDirectories("/usr/lib", "python3*").Order(StringComparer.Ordinal).FirstOrDefault(d => File.Exists(Path.Combine(d, "os.py")))
            ?? throw new DirectoryNotFoundException("no Python standard library under /usr/lib to take source text from");
        var builder = new StringBuilder(TextBytes + 4096);
        var total = 0;
        foreach (var path in Directory.GetFiles(folder, "*.py").Order(StringComparer.Ordinal))
        {
            var content = File.ReadAllText(path);
            builder.Append(content);
            total += Encoding.UTF8.GetByteCount(content);
            if (total > TextBytes)
                break;
        }
        var text = builder.ToString();
        // Cut at 1 MB of UTF-8 on a character boundary.
        var bytes = Encoding.UTF8.GetBytes(text);
        var cut = TextBytes;
        while (cut > 0 && (bytes[cut] & 0xC0) == 0x80)
            cut--;
        return Encoding.UTF8.GetString(bytes, 0, cut);
    }

    private static string RunScript(string script, string[] arguments)
    {
        var start = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add(script);
        foreach (var argument in arguments)
            start.ArgumentList.Add(argument);
        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEnd();
        process.WaitForExit();
        if (process.ExitCode != 0)
            throw new InvalidOperationException($"{script} failed: {error}");
        return output.Result;
    }
}
