using System.Text.Json.Nodes;
using InferenceServer.Model.Lora;
using InferenceServer.ModelBuilder.Lora;
using InferenceServer.Tests;

namespace InferenceServer.ModelBuilder.Tests;

/// <summary>PEFT folders the converter refuses, each with a message that names the problem, and nothing written.</summary>
public sealed class PeftConversionTests(LoraFixture models) : IClassFixture<LoraFixture>
{
    private static readonly PeftSpec Spec = new("broken", ["q_proj", "v_proj", "down_proj"], 4, 8, Seed: 21);

    public static TheoryData<string, string> Cases => new()
    {
        { "rank differs from r", "have rank 4, but adapter_config.json says r = 8" },
        { "missing B", "tensor 'base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight' is missing (its pair 'base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight' is there)" },
        { "unsupported target", "target module 'lm_head' is not supported; adapters can target q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj" },
        { "tensor of another module", "tensor 'base_model.model.model.embed_tokens.lora_A.weight' adapts 'model.embed_tokens', a module adapters cannot target" },
        { "untargeted tensor", "adapts 'model.layers.0.self_attn.k_proj', which adapter_config.json does not target" },
        { "dora", "DoRA adapters (use_dora) are not supported" },
        { "trained biases", "adapters that train biases (bias 'all') are not supported" },
        { "rank pattern", "per-module ranks or alphas (rank_pattern, alpha_pattern) are not supported" },
        { "no config", "no adapter_config.json" },
        { "no weights", "no adapter_model.safetensors" },
        { "another model", "layer 0 q_proj maps 32 to 64 features, the base model's 64 from 64: the adapter is for another model" },
        { "bad rank in config", "'r' (the rank) must be a positive integer" },
    };

    private static string Write(string folder, string problem)
    {
        static List<SafetensorsTensor> Add(List<SafetensorsTensor> tensors, SafetensorsTensor extra) => [.. tensors, extra];
        return problem switch
        {
            "rank differs from r" => LoraTestModels.WritePeftFolder(folder, Spec, c => c["r"] = 8),
            "missing B" => LoraTestModels.WritePeftFolder(folder, Spec, editTensors: t => t.Where(x => x.Name != LoraTestModels.BName(1, "v_proj")).ToList()),
            "unsupported target" => LoraTestModels.WritePeftFolder(folder, Spec, c => c["target_modules"] = new JsonArray("q_proj", "lm_head")),
            "tensor of another module" => LoraTestModels.WritePeftFolder(folder, Spec,
                editTensors: t => Add(t, LoraTestModels.F32("base_model.model.model.embed_tokens.lora_A.weight", [4, 256], new float[4 * 256]))),
            "untargeted tensor" => LoraTestModels.WritePeftFolder(folder, Spec,
                editTensors: t => Add(t, LoraTestModels.F32(LoraTestModels.AName(0, "k_proj"), [4, 64], new float[4 * 64]))),
            "dora" => LoraTestModels.WritePeftFolder(folder, Spec, c => c["use_dora"] = true),
            "trained biases" => LoraTestModels.WritePeftFolder(folder, Spec, c => c["bias"] = "all"),
            "rank pattern" => LoraTestModels.WritePeftFolder(folder, Spec, c => c["rank_pattern"] = new JsonObject { ["q_proj"] = 2 }),
            "no config" => Delete(LoraTestModels.WritePeftFolder(folder, Spec), PeftAdapter.ConfigFileName),
            "no weights" => Delete(LoraTestModels.WritePeftFolder(folder, Spec), PeftAdapter.WeightsFileName),
            "another model" => LoraTestModels.WritePeftFolder(folder, Spec, editTensors: t => t.Select(x => x.Name == LoraTestModels.AName(0, "q_proj")
                ? LoraTestModels.F32(x.Name, [4, 32], new float[4 * 32])
                : x).ToList()),
            "bad rank in config" => LoraTestModels.WritePeftFolder(folder, Spec, c => c["r"] = 0),
            _ => throw new ArgumentOutOfRangeException(nameof(problem), problem, "no such case"),
        };
    }

    private static string Delete(string folder, string file)
    {
        File.Delete(Path.Combine(folder, file));
        return folder;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void A_malformed_PEFT_folder_is_refused_with_a_message_that_names_the_problem(string problem, string message)
    {
        using var temp = new TempFolder();
        var peft = Write(temp.Combine("peft"), problem);
        var error = Assert.Throws<ModelBuildException>(() => LoraAdapterConverter.Convert(peft, models.WithAdapters.Path, "broken"));
        Assert.Contains(message, error.Message, StringComparison.Ordinal);
        Assert.False(Directory.Exists(Path.Combine(models.WithAdapters.Path, LoraNames.AdaptersFolder, "broken")));
    }

    [Fact]
    public void A_base_without_inputs_for_an_adapted_projection_is_refused()
    {
        using var temp = new TempFolder();
        var peft = LoraTestModels.WritePeftFolder(temp.Combine("peft"), Spec);

        var plain = Assert.Throws<ModelBuildException>(() => LoraAdapterConverter.Convert(peft, models.Plain.Path, "broken"));
        Assert.Contains("the base model was built without adapter inputs; build it with build-model --lora-targets", plain.Message, StringComparison.Ordinal);

        // A base with adapter inputs for the attention projections only: the adapter also changes down_proj.
        var attentionOnly = temp.Combine("attention-only");
        DecoderModelBuilder.BuildFromHuggingFace(Path.Combine(models.Root, "hf-base"), attentionOnly, new BuildOptions { LoraTargets = ["q_proj", "v_proj"] });
        var partial = Assert.Throws<ModelBuildException>(() => LoraAdapterConverter.Convert(peft, attentionOnly, "broken"));
        Assert.Contains("changes down_proj, but the base model has no adapter inputs for mlp.down_proj", partial.Message, StringComparison.Ordinal);
        Assert.False(Directory.Exists(Path.Combine(attentionOnly, LoraNames.AdaptersFolder, "broken")));

        var name = Assert.Throws<ModelBuildException>(() => LoraAdapterConverter.Convert(peft, models.WithAdapters.Path, "../escape"));
        Assert.Contains("adapter name '../escape' must be letters, digits", name.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Converting_twice_needs_overwrite()
    {
        using var temp = new TempFolder();
        var peft = LoraTestModels.WritePeftFolder(temp.Combine("peft"), Spec);
        var target = temp.Combine("base");
        DecoderModelBuilder.BuildFromHuggingFace(Path.Combine(models.Root, "hf-base"), target, new BuildOptions { LoraTargets = LoraNames.Modules });
        var written = LoraAdapterConverter.Convert(peft, target);
        Assert.Equal(Path.Combine(target, LoraNames.AdaptersFolder, "peft"), written);
        Assert.True(File.Exists(Path.Combine(written, LoraNames.WeightsFileName)));
        Assert.True(File.Exists(Path.Combine(written, LoraNames.ConfigFileName)));

        var again = Assert.Throws<ModelBuildException>(() => LoraAdapterConverter.Convert(peft, target));
        Assert.Contains("already exists (pass overwrite to replace it)", again.Message, StringComparison.Ordinal);
        LoraAdapterConverter.Convert(peft, target, overwrite: true);
    }

    [Fact]
    public void Adapter_inputs_are_refused_where_the_graph_cannot_carry_them()
    {
        using var temp = new TempFolder();
        var hf = Path.Combine(models.Root, "hf-base");
        var paged = Assert.Throws<ModelBuildException>(() => DecoderModelBuilder.BuildFromHuggingFace(hf, temp.Combine("p"),
            new BuildOptions { Variant = GraphVariant.Paged, Precision = Precision.Fp16, LoraTargets = ["q_proj"] }));
        Assert.Contains("adapter inputs are for the dense graph", paged.Message, StringComparison.Ordinal);
        var fp16 = Assert.Throws<ModelBuildException>(() => DecoderModelBuilder.BuildFromHuggingFace(hf, temp.Combine("h"),
            new BuildOptions { Precision = Precision.Fp16, LoraTargets = ["q_proj"] }));
        Assert.Contains("adapter inputs need float32 activations", fp16.Message, StringComparison.Ordinal);
        var module = Assert.Throws<ModelBuildException>(() => DecoderModelBuilder.BuildFromHuggingFace(hf, temp.Combine("m"),
            new BuildOptions { LoraTargets = ["lm_head"] }));
        Assert.Contains("'lm_head' is not a module adapters can target", module.Message, StringComparison.Ordinal);
    }
}
