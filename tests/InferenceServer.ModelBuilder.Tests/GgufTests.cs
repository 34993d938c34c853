using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using InferenceServer.Model;
using InferenceServer.ModelBuilder.Checkpoint;
using InferenceServer.ModelBuilder.Gguf;
using InferenceServer.Tests;

namespace InferenceServer.ModelBuilder.Tests;

/// <summary>
/// One Hugging Face folder of random weights, converted to our model folder and to a GGUF file:
/// llama.cpp (node-llama-cpp, installed by tests/fixtures/llamacpp/install.sh) loads the GGUF and
/// generates the same greedy tokens as our graph. This is what makes the peer benchmark in
/// bench/peers compare engines on the same model.
/// </summary>
public sealed class GgufTests : IDisposable
{
    private readonly TempFolder _temp = new();

    public void Dispose() => _temp.Dispose();

    private static readonly string Minicoder = Path.Combine(TestPaths.RepoRoot, "models", "minicoder");

    // A vocabulary larger than the tokenizer's 8192 tokens: the GGUF names the extra rows.
    private const string ConfigJson = """
        {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 128, "intermediate_size": 224,
         "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32, "num_hidden_layers": 2, "vocab_size": 8256,
         "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false,
         "hidden_act": "silu", "bos_token_id": 0, "eos_token_id": 0}
        """;

    private string WriteHuggingFaceFolder(string configJson = ConfigJson)
    {
        var configPath = _temp.Combine("config.json");
        File.WriteAllText(configPath, configJson);
        var folder = _temp.Combine("hf");
        using var weights = new RandomWeights(7);
        HfFolderWriter.Write(configPath, weights, folder, Minicoder, overwrite: false);
        return folder;
    }

    [Fact]
    public void Hugging_face_folder_holds_the_random_weights_bit_for_bit()
    {
        var hf = WriteHuggingFaceFolder();
        DecoderModelBuilder.BuildFromHuggingFace(hf, _temp.Combine("from-hf"), new BuildOptions());
        DecoderModelBuilder.BuildRandom(HfConfig.Load(Path.Combine(hf, "config.json")), _temp.Combine("random"), new BuildOptions(), 7);

        Assert.Equal(File.ReadAllBytes(Path.Combine(_temp.Combine("random"), DecoderModelBuilder.DataFileName)),
            File.ReadAllBytes(Path.Combine(_temp.Combine("from-hf"), DecoderModelBuilder.DataFileName)));
        Assert.True(File.Exists(Path.Combine(hf, "tokenizer.json")));
    }

    [Fact]
    public void Llama_cpp_generates_our_greedy_tokens_from_the_gguf_of_the_same_weights()
    {
        var hf = WriteHuggingFaceFolder();
        var ours = _temp.Combine("onnx");
        var gguf = _temp.Combine("model.gguf");
        DecoderModelBuilder.BuildFromHuggingFace(hf, ours, new BuildOptions());
        using (var checkpoint = new HfCheckpoint(hf))
            LlamaGgufBuilder.Build(HfConfig.Load(Path.Combine(hf, "config.json")), checkpoint, hf, gguf, Precision.Fp32, overwrite: false);

        // Prompts of different lengths, so rotary positions up to ~100 are exercised.
        var random = new Random(3);
        int[][] prompts = [[.. Enumerable.Range(0, 5).Select(_ => random.Next(8192))],
                           [.. Enumerable.Range(0, 37).Select(_ => random.Next(8192))],
                           [.. Enumerable.Range(0, 80).Select(_ => random.Next(8192))]];
        const int Tokens = 20;

        var expected = new List<int[]>();
        using (var runner = new DecoderRunner(ModelFolder.Load(ours), new RunnerOptions { MaxBatch = 1, MaxSequenceLength = 128 }))
        {
            foreach (var prompt in prompts)
                expected.Add(Greedy.Generate(runner, prompt, Tokens, []));
        }
        var actual = LlamaCppGreedy(gguf, prompts, Tokens);

        Assert.Equal(prompts.Length, actual.Length);
        for (var i = 0; i < prompts.Length; i++)
            Assert.Equal(expected[i], actual[i]);
    }

    [Fact]
    public void Gguf_refuses_what_llama_cpp_would_compute_differently()
    {
        var hf = WriteHuggingFaceFolder();
        var config = HfConfig.Load(Path.Combine(hf, "config.json"));
        using var weights = new RandomWeights(7);

        var qwen = Assert.Throws<ModelBuildException>(() =>
            LlamaGgufBuilder.Build(config with { Architecture = "Qwen2ForCausalLM" }, weights, hf, _temp.Combine("q.gguf"), Precision.Fp32, false));
        Assert.Contains("Qwen2ForCausalLM", qwen.Message, StringComparison.Ordinal);

        var int4 = Assert.Throws<ModelBuildException>(() => LlamaGgufBuilder.Build(config, weights, hf, _temp.Combine("i.gguf"), Precision.Int4, false));
        Assert.Contains("fp32 or fp16", int4.Message, StringComparison.Ordinal);

        // A split pattern llama.cpp has no pre-tokenizer for.
        var tokenizer = JsonNode.Parse(File.ReadAllText(Path.Combine(hf, "tokenizer.json")))!;
        tokenizer["pre_tokenizer"]!["pretokenizers"]![0]!["pattern"]!["Regex"] = "\\s+|\\w+";
        File.WriteAllText(Path.Combine(hf, "tokenizer.json"), tokenizer.ToJsonString());
        var pattern = Assert.Throws<ModelBuildException>(() => LlamaGgufBuilder.Build(config, weights, hf, _temp.Combine("p.gguf"), Precision.Fp32, false));
        Assert.Contains("no pre-tokenizer for the split pattern", pattern.Message, StringComparison.Ordinal);
        Assert.False(File.Exists(_temp.Combine("p.gguf")));
    }

    [Fact]
    public void Gguf_starts_with_the_version_3_header_and_holds_every_tensor_once()
    {
        var hf = WriteHuggingFaceFolder();
        var gguf = _temp.Combine("model.gguf");
        var config = HfConfig.Load(Path.Combine(hf, "config.json"));
        using (var checkpoint = new HfCheckpoint(hf))
            LlamaGgufBuilder.Build(config, checkpoint, hf, gguf, Precision.Fp16, overwrite: false);

        using var reader = new BinaryReader(File.OpenRead(gguf));
        Assert.Equal("GGUF"u8.ToArray(), reader.ReadBytes(4));
        Assert.Equal(3u, reader.ReadUInt32());
        Assert.Equal((ulong)HfTensors.For(config).Count, reader.ReadUInt64());
        // fp16 halves the matrices: the file is about half the float32 checkpoint.
        var checkpointBytes = new FileInfo(Path.Combine(hf, HfFolderWriter.WeightsFileName)).Length;
        Assert.InRange(new FileInfo(gguf).Length, checkpointBytes / 2, checkpointBytes * 6 / 10);
    }

    private static int[][] LlamaCppGreedy(string gguf, int[][] prompts, int tokens)
    {
        var nodeModules = FixtureScripts.Run(Path.Combine(TestPaths.RepoRoot, "tests", "fixtures", "llamacpp", "install.sh"), [], TimeSpan.FromMinutes(10)).Trim();
        using var temp = new TempFolder();
        var promptsFile = temp.Combine("prompts.json");
        File.WriteAllText(promptsFile, JsonSerializer.Serialize(new { prompts }));
        var start = new ProcessStartInfo("node")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var argument in new[] { Path.Combine(TestPaths.RepoRoot, "bench", "peers", "llamacpp.mjs"), "--node-modules", nodeModules,
                     "greedy", "--model", gguf, "--prompts", promptsFile, "--tokens", tokens.ToString(System.Globalization.CultureInfo.InvariantCulture) })
            start.ArgumentList.Add(argument);
        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        var stdout = process.StandardOutput.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromMinutes(2)))
        {
            process.Kill(entireProcessTree: true);
            throw new InvalidOperationException($"llamacpp.mjs did not finish: {FixtureScripts.Drained(stderr)}");
        }
        process.WaitForExit();
        if (process.ExitCode != 0)
            throw new InvalidOperationException($"llamacpp.mjs failed with exit code {process.ExitCode}: {FixtureScripts.Drained(stderr)}");
        return JsonSerializer.Deserialize<int[][]>(stdout.Result) ?? throw new InvalidOperationException("llamacpp.mjs printed null");
    }
}
