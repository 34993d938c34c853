using InferenceServer.Tests;

namespace InferenceServer.Model.Tests;

public sealed class ModelFolderTests(SmallModelFixture model) : IClassFixture<SmallModelFixture>
{
    [Fact]
    public void A_built_folder_loads_with_its_config()
    {
        var folder = ModelFolder.Load(model.Folder.Path);
        Assert.Equal(2, folder.Config.Model.Decoder.NumHiddenLayers);
        Assert.Equal([2], folder.Config.Model.EosTokenId);
        Assert.True(File.Exists(folder.DecoderPath));
        Assert.Null(folder.TokenizerPath);
    }

    [Fact]
    public void Missing_parts_are_named()
    {
        using var temp = new TempFolder();
        var missing = Assert.Throws<ModelLoadException>(() => ModelFolder.Load(temp.Combine("nope")));
        Assert.Contains("does not exist", missing.Message, StringComparison.Ordinal);

        var noConfig = Assert.Throws<ModelLoadException>(() => ModelFolder.Load(temp.Path));
        Assert.Contains("genai_config.json", noConfig.Message, StringComparison.Ordinal);

        File.Copy(Path.Combine(model.Folder.Path, "genai_config.json"), temp.Combine("genai_config.json"));
        var noGraph = Assert.Throws<ModelLoadException>(() => ModelFolder.Load(temp.Path));
        Assert.Contains("model.onnx", noGraph.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("{ not json", "not valid JSON")]
    [InlineData("""{"model": {"decoder": {"filename": "model.onnx", "num_hidden_layers": 0}}}""", "num_hidden_layers")]
    [InlineData("""{"model": {"vocab_size": 10, "context_length": 8, "decoder": {"filename": "model.onnx", "num_hidden_layers": 1, "num_attention_heads": 1, "num_key_value_heads": 1, "head_size": 16, "inputs": {"past_key_names": "past"}}}}""", "past_key_names")]
    public void A_bad_genai_config_is_reported(string json, string expected)
    {
        var e = Assert.Throws<ModelLoadException>(() => GenaiConfig.Parse(json, "genai_config.json"));
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_graph_that_does_not_match_its_config_is_refused_at_load()
    {
        using var temp = new TempFolder();
        foreach (var file in Directory.GetFiles(model.Folder.Path))
            File.Copy(file, Path.Combine(temp.Path, Path.GetFileName(file)));
        var config = File.ReadAllText(temp.Combine("genai_config.json"))
            .Replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3", StringComparison.Ordinal);
        File.WriteAllText(temp.Combine("genai_config.json"), config);

        var e = Assert.Throws<ModelLoadException>(() => new DecoderRunner(ModelFolder.Load(temp.Path), new RunnerOptions { MaxBatch = 1, MaxSequenceLength = 8 }));
        Assert.Contains("past_key_values.2.key", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_corrupt_graph_is_reported_as_a_load_error()
    {
        using var temp = new TempFolder();
        foreach (var file in Directory.GetFiles(model.Folder.Path))
            File.Copy(file, Path.Combine(temp.Path, Path.GetFileName(file)));
        File.WriteAllBytes(temp.Combine("model.onnx"), [1, 2, 3, 4, 5]);

        var e = Assert.Throws<ModelLoadException>(() => new DecoderRunner(ModelFolder.Load(temp.Path), new RunnerOptions { MaxBatch = 1, MaxSequenceLength = 8 }));
        Assert.Contains("cannot load the graph", e.Message, StringComparison.Ordinal);
    }
}
