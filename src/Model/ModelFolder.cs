namespace InferenceServer.Model;

/// <summary>
/// A model folder in the graph contract: genai_config.json, tokenizer.json and the decoder graph
/// (with its external data beside it). Loading checks that the parts are there; the graph itself
/// is checked when the session is created.
/// </summary>
public sealed class ModelFolder
{
    public const string ConfigFileName = "genai_config.json";
    public const string TokenizerFileName = "tokenizer.json";

    public string Path { get; }
    public GenaiConfig Config { get; }
    public string DecoderPath => System.IO.Path.Combine(Path, Config.Model.Decoder.Filename);

    /// <summary>The tokenizer file, or null when the folder has none (a bare graph for benchmarks).</summary>
    public string? TokenizerPath { get; }

    private ModelFolder(string path, GenaiConfig config, string? tokenizerPath)
    {
        Path = path;
        Config = config;
        TokenizerPath = tokenizerPath;
    }

    public static ModelFolder Load(string path)
    {
        var full = System.IO.Path.GetFullPath(path);
        if (!Directory.Exists(full))
            throw new ModelLoadException($"model folder '{full}' does not exist");
        var configPath = System.IO.Path.Combine(full, ConfigFileName);
        if (!File.Exists(configPath))
            throw new ModelLoadException($"model folder '{full}' has no {ConfigFileName}");
        var config = GenaiConfig.Parse(File.ReadAllText(configPath), configPath);
        var decoder = System.IO.Path.Combine(full, config.Model.Decoder.Filename);
        if (!File.Exists(decoder))
            throw new ModelLoadException($"model folder '{full}': the decoder graph '{config.Model.Decoder.Filename}' named in {ConfigFileName} is missing");
        var tokenizer = System.IO.Path.Combine(full, TokenizerFileName);
        return new ModelFolder(full, config, File.Exists(tokenizer) ? tokenizer : null);
    }
}
