using BenchmarkDotNet.Attributes;

namespace InferenceServer.Benchmarks.TokenizerLibraries;

/// <summary>
/// Encoding the 1 MB of Python source of <see cref="TokenizerEncodeBenchmark"/> with our tokenizer,
/// Microsoft.ML.Tokenizers (BPE built from tokenizer.json by <see cref="MicrosoftMlLoader"/>) and
/// Tokenizers.DotNet (Hugging Face's Rust tokenizer). Allocated bytes are managed memory only.
/// Families where both libraries load as BPE; the exactness table is `tokenizer-libraries`.
/// </summary>
public class TokenizerLibraryEncodeBenchmark
{
    private Tokenizer.Tokenizer _ours = null!;
    private Microsoft.ML.Tokenizers.Tokenizer _microsoftMl = null!;
    private Tokenizers.DotNet.Tokenizer _rust = null!;
    private string _text = "";
    private readonly List<int> _ids = [];

    [Params("qwen3", "llama3")]
    public string Name { get; set; } = "";

    [GlobalSetup]
    public void Setup()
    {
        var path = Path.Combine(TokenizerEncodeBenchmark.OracleFolder(), "tokenizers", Name, "tokenizer.json");
        _ours = Tokenizer.Tokenizer.Load(path);
        _microsoftMl = MicrosoftMlLoader.Load(path).Tokenizer ?? throw new InvalidOperationException($"Microsoft.ML.Tokenizers cannot load {Name}");
        _rust = new Tokenizers.DotNet.Tokenizer(path);
        _text = TokenizerEncodeBenchmark.SourceText();
    }

    [GlobalCleanup]
    public void Cleanup() => _rust.Dispose();

    [Benchmark(Baseline = true)]
    public int Ours()
    {
        _ids.Clear();
        _ours.Encode(_text, _ids);
        return _ids.Count;
    }

    [Benchmark]
    public int MicrosoftMlTokenizers() => MicrosoftMlLoader.Encode(_microsoftMl, _text).Count;

    [Benchmark]
    public int TokenizersDotNet() => _rust.Encode(_text).Length;
}
