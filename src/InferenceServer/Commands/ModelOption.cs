using System.CommandLine;

namespace InferenceServer.Commands;

/// <summary>The --model option the serving commands share, and where the default model lives.</summary>
internal static class ModelOption
{
    public const string EnvironmentVariable = "INFERENCESERVER_MODEL";

    /// <summary>The model served when none is named: the small code model shipped in the repository.</summary>
    public static readonly string DefaultPath = Path.Combine("models", "minicoder");

    public static Option<string> Create() => new("--model", "-m")
    {
        Description = $"Model folder (genai_config.json, tokenizer.json, model.onnx). Default: ${EnvironmentVariable}, else models/minicoder.",
        DefaultValueFactory = _ => Environment.GetEnvironmentVariable(EnvironmentVariable) ?? DefaultPath,
    };
}
