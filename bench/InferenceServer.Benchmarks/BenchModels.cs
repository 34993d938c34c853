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

    public static ModelFolder Get(HfConfig config, string name, Precision precision = Precision.Fp32)
    {
        var path = Path.Combine(Path.GetTempPath(), "inferenceserver-bench", $"{name}-{precision}".ToLowerInvariant());
        if (!File.Exists(Path.Combine(path, ModelFolder.ConfigFileName)))
            DecoderModelBuilder.BuildRandom(config, path, new BuildOptions { Precision = precision, Overwrite = true }, seed: 1);
        return ModelFolder.Load(path);
    }
}
