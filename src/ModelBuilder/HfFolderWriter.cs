using InferenceServer.Model;
using InferenceServer.ModelBuilder.Checkpoint;

namespace InferenceServer.ModelBuilder;

/// <summary>
/// Writes a Hugging Face model folder (config.json, model.safetensors in float32, the tokenizer
/// files) from any weight source: the one checkpoint every engine of a comparison converts from.
/// </summary>
public static class HfFolderWriter
{
    public const string WeightsFileName = "model.safetensors";

    /// <param name="configPath">The config.json to copy as it is (it describes the weights' shape).</param>
    /// <param name="fimOrder">Written to serving.json, which build-model --input carries into the model folder; null: none.</param>
    public static void Write(string configPath, IWeightSource weights, string outputFolder, string? tokenizerFolder, bool overwrite, string? fimOrder = null)
    {
        ArgumentNullException.ThrowIfNull(weights);
        var config = HfConfig.Load(configPath);
        StagedFolder.Write(outputFolder, overwrite, staging =>
        {
            File.Copy(configPath, Path.Combine(staging, "config.json"));
            using (var stream = new FileStream(Path.Combine(staging, WeightsFileName), FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
                SafetensorsWriter.Write(stream, HfTensors.For(config), weights);
            DecoderModelBuilder.CopyTokenizerFiles(tokenizerFolder, staging);
            if (fimOrder is not null)
                ServingFile.WriteFimOrder(staging, fimOrder);
        });
    }
}
