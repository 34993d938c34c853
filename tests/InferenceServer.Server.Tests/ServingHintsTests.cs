using InferenceServer.Model;
using InferenceServer.Tests;
using InferenceServer.Tokenizer;

namespace InferenceServer.Server.Tests;

/// <summary>serving.json in a model folder: the fill-in-the-middle order, and a clear error for a bad file.</summary>
[Collection(ServerCollection.Name)]
public sealed class ServingHintsTests(ServerFixture fixture)
{
    [Theory]
    [InlineData(null, FimOrder.PrefixSuffixMiddle)]
    [InlineData("""{"fim_order": "suffix-prefix-middle"}""", FimOrder.SuffixPrefixMiddle)]
    [InlineData("""{"fim_order": "prefix-suffix-middle"}""", FimOrder.PrefixSuffixMiddle)]
    [InlineData("""{}""", FimOrder.PrefixSuffixMiddle)]
    public void The_order_comes_from_serving_json(string? json, FimOrder expected)
    {
        using var temp = CopyOfModel(json);
        Assert.Equal(expected, ServingHints.FimOrder(ModelFolder.Load(temp.Path)));
    }

    [Theory]
    [InlineData("""{"fim_order": "middle-first"}""", "middle-first")]
    [InlineData("""{"fim_order": 3}""", "serving.json")]
    [InlineData("""not json""", "serving.json")]
    public void A_bad_serving_json_is_refused_with_its_path(string json, string mentioned)
    {
        using var temp = CopyOfModel(json);
        var error = Assert.Throws<ModelLoadException>(() => ServingHints.FimOrder(ModelFolder.Load(temp.Path)));
        Assert.Contains(mentioned, error.Message, StringComparison.Ordinal);
    }

    private TempFolder CopyOfModel(string? servingJson)
    {
        var temp = new TempFolder();
        foreach (var file in Directory.GetFiles(fixture.Model.Folder.Path))
            File.Copy(file, Path.Combine(temp.Path, Path.GetFileName(file)));
        if (servingJson is not null)
            File.WriteAllText(Path.Combine(temp.Path, ServingHints.FileName), servingJson);
        return temp;
    }
}
