using InferenceServer.Model.Lora;
using InferenceServer.Tests;
using DataType = InferenceServer.ModelBuilder.Onnx.TensorProto.Types.DataType;

namespace InferenceServer.ModelBuilder.Tests;

/// <summary>The adapter inputs a graph gets for --lora-targets, and the plain graph's lack of them.</summary>
public sealed class LoraGraphTests(LoraFixture models) : IClassFixture<LoraFixture>
{
    [Fact]
    public void Targets_give_their_packed_projections_stacked_inputs_with_empty_defaults()
    {
        using var temp = new TempFolder();
        DecoderModelBuilder.BuildFromHuggingFace(Path.Combine(models.Root, "hf-base"), temp.Combine("m"), new BuildOptions { LoraTargets = ["k_proj", "down_proj"] });
        var model = OnnxTestModel.Load(temp.Combine("m"));
        var c = LoraTestModels.Config;

        var adapterInputs = model.Graph.Input.Where(i => i.Name.Contains("lora", StringComparison.Ordinal)).Select(i => i.Name).Order(StringComparer.Ordinal).ToArray();
        string[] expected =
        [
            LoraNames.AdapterIndex,
            .. Enumerable.Range(0, c.NumHiddenLayers).SelectMany(layer => new[]
            {
                LoraNames.A(layer, LoraNames.Projections[0]), LoraNames.B(layer, LoraNames.Projections[0]),
                LoraNames.A(layer, LoraNames.Projections[3]), LoraNames.B(layer, LoraNames.Projections[3]),
            }),
        ];
        Assert.Equal(expected.Order(StringComparer.Ordinal), adapterInputs);

        var qkvOut = (c.NumAttentionHeads + 2 * c.NumKeyValueHeads) * c.HeadDim;
        var a = model.Graph.Input.Single(i => i.Name == LoraNames.A(1, LoraNames.Projections[0]));
        var b = model.Graph.Input.Single(i => i.Name == LoraNames.B(1, LoraNames.Projections[0]));
        Assert.Equal(["lora_adapters", c.HiddenSize.ToString(System.Globalization.CultureInfo.InvariantCulture), "model.layers.1.self_attn.qkv_proj.lora_rank"], OnnxTestModel.Dims(a));
        Assert.Equal(["lora_adapters", "model.layers.1.self_attn.qkv_proj.lora_rank", qkvOut.ToString(System.Globalization.CultureInfo.InvariantCulture)], OnnxTestModel.Dims(b));
        Assert.Equal(DataType.Float, OnnxTestModel.ElementType(a));

        // Defaults: stacks of one empty adapter, and index [0].
        Assert.Equal([1L, c.HiddenSize, 0], model.Initializer(a.Name).Dims);
        Assert.Equal([1L, 0, qkvOut], model.Initializer(b.Name).Dims);
        Assert.Equal(BitConverter.GetBytes(0L), model.Bytes(model.Initializer(LoraNames.AdapterIndex)));
        Assert.Equal(8, model.Nodes("Gather").Count(n => n.Name.Contains("/lora/", StringComparison.Ordinal)));
    }

    [Fact]
    public void A_plain_build_has_no_adapter_inputs()
    {
        var model = OnnxTestModel.Load(models.Plain.Path);
        Assert.DoesNotContain(model.Graph.Input, i => i.Name.Contains("lora", StringComparison.Ordinal));
        Assert.DoesNotContain(model.Graph.Node, n => n.Name.Contains("/lora/", StringComparison.Ordinal));
    }
}
