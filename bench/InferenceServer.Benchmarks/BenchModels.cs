using System.Text;
using InferenceServer.Model;
using InferenceServer.ModelBuilder;

namespace InferenceServer.Benchmarks;

/// <summary>Random-weight models for benchmarks, built once and kept in the temp folder.</summary>
public static class BenchModels
{
    /// <summary>20.2M parameters: Llama layout, 4 layers of width 512, 8 heads over 4 KV heads, 8k vocabulary.</summary>
    public static HfConfig Small20M { get; } = HfConfig.Load(RepoFile("models/configs/llama-20m.json"));

    public static string RepoFile(string relative)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, relative);
            if (File.Exists(candidate))
                return candidate;
        }
        throw new FileNotFoundException($"{relative} not found above {AppContext.BaseDirectory}");
    }

    /// <summary>The model, built on first use; with <paramref name="loraTargets"/> its graph has adapter inputs for those modules.</summary>
    public static ModelFolder Get(HfConfig config, string name, Precision precision = Precision.Fp32, IReadOnlyList<string>? loraTargets = null)
    {
        var path = Path.Combine(Path.GetTempPath(), "inferenceserver-bench", $"{name}-{precision}".ToLowerInvariant());
        if (!File.Exists(Path.Combine(path, ModelFolder.ConfigFileName)))
        {
            var options = new BuildOptions { Precision = precision, Overwrite = true, LoraTargets = loraTargets ?? [] };
            DecoderModelBuilder.BuildRandom(config, path, options, seed: 1);
        }
        return ModelFolder.Load(path);
    }

    /// <summary>
    /// A byte-level tokenizer of the given size for random-weight models: the 256 byte tokens,
    /// then plain ASCII words ("w300"), so any id decodes to text.
    /// </summary>
    public static Tokenizer.Tokenizer SyntheticTokenizer(int size)
    {
        var json = new StringBuilder("{\"model\": {\"type\": \"BPE\", \"vocab\": {");
        for (var b = 0; b < 256; b++)
        {
            var c = Tokenizer.Model.ByteLevelAlphabet.ByteToChar((byte)b);
            json.Append('"').Append(c switch { '"' => "\\\"", '\\' => "\\\\", _ => c.ToString() }).Append("\": ").Append(b).Append(", ");
        }
        for (var id = 256; id < size; id++)
            json.Append("\"w").Append(id).Append("\": ").Append(id).Append(id + 1 < size ? ", " : "");
        json.Append("}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false}, \"decoder\": {\"type\": \"ByteLevel\"}}");
        using var stream = new MemoryStream(Encoding.UTF8.GetBytes(json.ToString()));
        return Tokenizer.Tokenizer.Load(stream, "synthetic");
    }
}
