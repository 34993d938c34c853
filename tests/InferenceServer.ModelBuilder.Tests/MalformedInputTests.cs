using System.Text.Json.Nodes;
using InferenceServer.Tests;

namespace InferenceServer.ModelBuilder.Tests;

/// <summary>
/// Inputs the builder must refuse: each fails with a <see cref="ModelBuildException"/> whose
/// message names the problem, and leaves neither the output folder nor a staging folder
/// (.{name}.partial-{guid}) behind.
/// </summary>
public sealed class MalformedInputTests : IDisposable
{
    private readonly TempFolder _temp = new();

    public MalformedInputTests()
    {
        // The output's parent holds nothing but what a test puts there, so any leftover shows.
        Directory.CreateDirectory(Models);
        FixtureCopy.Of("llama", Hf);
    }

    public void Dispose() => _temp.Dispose();

    /// <summary>A changeable copy of the llama fixture.</summary>
    private string Hf => _temp.Combine("hf");

    private string Models => _temp.Combine("models");

    private string Output => Path.Combine(Models, "model");

    private string Weights => Path.Combine(Hf, "model.safetensors");

    [Fact]
    public void Unsupported_architecture_is_named()
    {
        FixtureCopy.EditConfig(Hf, c => c["architectures"] = new JsonArray("GPT2LMHeadModel"));
        var e = AssertBuildFails();
        Assert.Contains("unsupported architecture 'GPT2LMHeadModel'", e.Message, StringComparison.Ordinal);
        Assert.Contains("LlamaForCausalLM", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Config_without_architectures_is_refused(bool emptyList)
    {
        FixtureCopy.EditConfig(Hf, c =>
        {
            if (emptyList)
                c["architectures"] = new JsonArray();
            else
                c.Remove("architectures");
        });
        var e = AssertBuildFails();
        Assert.Contains("no 'architectures' entry", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Config_that_is_not_json_is_refused()
    {
        File.WriteAllText(Path.Combine(Hf, "config.json"), "{ \"architectures\": [");
        var e = AssertBuildFails();
        Assert.Contains("config.json: not valid JSON", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Size_that_is_not_a_number_is_named()
    {
        FixtureCopy.EditConfig(Hf, c => c["num_hidden_layers"] = "two");
        var e = AssertBuildFails();
        Assert.Contains("'num_hidden_layers' must be an integer, got \"two\"", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Size_that_is_not_an_integer_is_named()
    {
        FixtureCopy.EditConfig(Hf, c => c["hidden_size"] = 128.5);
        var e = AssertBuildFails();
        Assert.Contains("hidden_size", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Missing_tensor_is_named()
    {
        // A tensor of the last layer: the build is well under way (staging folder, data file)
        // when it is found missing, so this also checks the clean-up.
        var tensors = SafetensorsTestFile.Read(Weights);
        Assert.Equal(1, tensors.RemoveAll(t => t.Name == "model.layers.1.mlp.down_proj.weight"));
        SafetensorsTestFile.Write(Weights, tensors);

        var e = AssertBuildFails();
        Assert.Contains("no tensor 'model.layers.1.mlp.down_proj.weight'", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Missing_lm_head_of_an_untied_model_is_named()
    {
        var tensors = SafetensorsTestFile.Read(Weights);
        Assert.Equal(1, tensors.RemoveAll(t => t.Name == "lm_head.weight"));
        SafetensorsTestFile.Write(Weights, tensors);

        var e = AssertBuildFails();
        Assert.Contains("'lm_head.weight'", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Shape_mismatch_names_the_tensor_and_both_shapes()
    {
        // The checkpoint's MLP is [256, 128]; a config saying 128 implies [128, 128].
        FixtureCopy.EditConfig(Hf, c => c["intermediate_size"] = 128);
        var e = AssertBuildFails();
        Assert.Contains("'model.layers.0.mlp.gate_proj.weight'", e.Message, StringComparison.Ordinal);
        Assert.Contains("[256, 128]", e.Message, StringComparison.Ordinal);
        Assert.Contains("[128, 128]", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void File_cut_in_half_is_reported_as_truncated()
    {
        // The header survives; the tensors past the cut point beyond the data.
        Truncate(Weights, new FileInfo(Weights).Length / 2);
        var e = AssertBuildFails();
        Assert.Contains("truncated safetensors file", e.Message, StringComparison.Ordinal);
        Assert.Contains("model.safetensors", e.Message, StringComparison.Ordinal);
        Assert.Contains("spans bytes", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(7)]
    public void File_shorter_than_the_header_length_is_reported_as_truncated(int length)
    {
        Truncate(Weights, length);
        var e = AssertBuildFails();
        Assert.Contains($"truncated safetensors file ({length} bytes", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void File_cut_inside_its_header_is_reported_as_truncated()
    {
        Truncate(Weights, 100);
        var e = AssertBuildFails();
        Assert.Contains("truncated safetensors file (header of", e.Message, StringComparison.Ordinal);
        Assert.Contains("in a file of 100)", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Header_that_is_not_json_is_refused()
    {
        SafetensorsTestFile.WriteRaw(Weights, "this is not JSON", new byte[16]);
        var e = AssertBuildFails();
        Assert.Contains("the safetensors header is not valid JSON", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Header_that_is_json_but_not_an_object_is_refused()
    {
        SafetensorsTestFile.WriteRaw(Weights, "[1, 2, 3]", new byte[16]);
        var e = AssertBuildFails();
        Assert.Contains("model.safetensors", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Header_length_near_the_largest_long_is_reported_as_truncated()
    {
        // A corrupt length prefix (here 2^63 - 8) must be reported like any other truncation.
        byte[] bytes = [0xF8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F, .. new byte[64]];
        File.WriteAllBytes(Weights, bytes);
        var e = AssertBuildFails();
        Assert.Contains("truncated safetensors file", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Header_entry_without_data_offsets_names_the_tensor()
    {
        SafetensorsTestFile.WriteRaw(Weights, """{"model.norm.weight": {"dtype": "F32", "shape": [128]}}""", new byte[512]);
        var e = AssertBuildFails();
        Assert.Contains("'model.norm.weight' has a malformed header entry", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Byte_range_that_disagrees_with_dtype_and_shape_is_refused()
    {
        // 128 F32 values are 512 bytes, not 256.
        SafetensorsTestFile.WriteRaw(Weights, """{"model.norm.weight": {"dtype": "F32", "shape": [128], "data_offsets": [0, 256]}}""", new byte[256]);
        var e = AssertBuildFails();
        Assert.Contains("'model.norm.weight' (F32 [128]) needs 512 bytes but spans 256", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("I64", 8)]
    [InlineData("F64", 8)]
    [InlineData("U8", 1)]
    public void Unsupported_dtype_names_the_tensor_and_the_dtype(string dtype, int elementSize)
    {
        var tensors = SafetensorsTestFile.Read(Weights)
            .Select(t => t.Name == "model.norm.weight" ? t with { DType = dtype, Data = new byte[128 * elementSize] } : t);
        SafetensorsTestFile.Write(Weights, tensors);

        var e = AssertBuildFails();
        Assert.Contains($"tensor 'model.norm.weight' has dtype {dtype}", e.Message, StringComparison.Ordinal);
        Assert.Contains("F32, F16 and BF16", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Same_tensor_in_two_shards_names_the_tensor_and_both_files()
    {
        var hf = FixtureCopy.Of("qwen2", _temp.Combine("qwen2"));
        var first = Path.Combine(hf, "model-00001-of-00002.safetensors");
        var second = Path.Combine(hf, "model-00002-of-00002.safetensors");
        var embedding = SafetensorsTestFile.Read(first).Single(t => t.Name == "model.embed_tokens.weight");
        SafetensorsTestFile.Write(second, [.. SafetensorsTestFile.Read(second), embedding]);

        var e = AssertBuildFails(hf);
        Assert.Contains("tensor 'model.embed_tokens.weight' is in both model-00001-of-00002.safetensors and model-00002-of-00002.safetensors",
            e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_shard_the_index_lists_but_the_folder_lacks_is_named()
    {
        var hf = FixtureCopy.Of("qwen2", _temp.Combine("qwen2"));
        File.Delete(Path.Combine(hf, "model-00002-of-00002.safetensors"));

        var e = AssertBuildFails(hf);
        Assert.Contains("lists shard 'model-00002-of-00002.safetensors', which is missing", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void With_an_index_only_the_listed_shards_are_read()
    {
        // A stray file (here one that repeats a tensor, which would be refused as a duplicate)
        // is ignored when model.safetensors.index.json says which shards make the checkpoint.
        var hf = FixtureCopy.Of("qwen2", _temp.Combine("qwen2"));
        File.Copy(Path.Combine(hf, "model-00001-of-00002.safetensors"), Path.Combine(hf, "stray.safetensors"));

        DecoderModelBuilder.BuildFromHuggingFace(hf, Output, new BuildOptions());
        Assert.True(File.Exists(Path.Combine(Output, DecoderModelBuilder.GraphFileName)));
    }

    [Theory]
    [InlineData(24)]
    [InlineData(8)]
    public void Head_dim_that_is_not_a_multiple_of_16_is_refused(int headDim)
    {
        FixtureCopy.EditConfig(Hf, c => c["head_dim"] = headDim);
        var e = AssertBuildFails();
        Assert.Contains($"head_dim {headDim} is not a multiple of 16", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Head_dim_derived_from_hidden_size_is_checked_too()
    {
        // 96 / 4 heads = 24, with no head_dim entry to override it.
        FixtureCopy.EditConfig(Hf, c =>
        {
            c.Remove("head_dim");
            c["hidden_size"] = 96;
        });
        var e = AssertBuildFails();
        Assert.Contains("head_dim 24 is not a multiple of 16", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Folder_without_safetensors_is_refused()
    {
        File.Delete(Weights);
        var e = AssertBuildFails();
        Assert.Contains("no *.safetensors files", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Missing_input_folder_is_refused()
    {
        var e = AssertBuildFails(_temp.Combine("nowhere"));
        Assert.Contains("nowhere: no such folder", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Existing_output_is_kept_unless_overwrite_is_asked_for()
    {
        Directory.CreateDirectory(Output);
        var marker = Path.Combine(Output, "keep.txt");
        File.WriteAllText(marker, "earlier model");

        var e = Assert.Throws<ModelBuildException>(() => DecoderModelBuilder.BuildFromHuggingFace(Hf, Output, new BuildOptions()));
        Assert.Contains("already exists", e.Message, StringComparison.Ordinal);
        Assert.Equal("earlier model", File.ReadAllText(marker));
        Assert.Equal([Output], Directory.GetFileSystemEntries(Models));

        DecoderModelBuilder.BuildFromHuggingFace(Hf, Output, new BuildOptions { Overwrite = true });
        Assert.False(File.Exists(marker));
        Assert.True(File.Exists(Path.Combine(Output, DecoderModelBuilder.GraphFileName)));
        Assert.True(File.Exists(Path.Combine(Output, DecoderModelBuilder.DataFileName)));
        Assert.Equal([Output], Directory.GetFileSystemEntries(Models));
    }

    [Fact]
    public void Failed_overwrite_leaves_the_existing_output_untouched()
    {
        // The old folder is only replaced once the new one is complete.
        Directory.CreateDirectory(Output);
        var marker = Path.Combine(Output, "keep.txt");
        File.WriteAllText(marker, "earlier model");
        FixtureCopy.EditConfig(Hf, c => c["intermediate_size"] = 128);

        var e = Assert.Throws<ModelBuildException>(() => DecoderModelBuilder.BuildFromHuggingFace(Hf, Output, new BuildOptions { Overwrite = true }));
        Assert.Contains("gate_proj", e.Message, StringComparison.Ordinal);
        Assert.Equal("earlier model", File.ReadAllText(marker));
        Assert.Equal([Output], Directory.GetFileSystemEntries(Models));
    }

    [Fact]
    public void Failure_inside_the_weight_source_removes_the_staging_folder()
    {
        // Any exception, not only the builder's own, must not leave a half-written folder.
        var config = HfConfig.Load(Path.Combine(Hf, "config.json"));
        using var weights = new FailingWeights("model.layers.1.self_attn.o_proj.weight");
        var e = Assert.Throws<IOException>(() => DecoderModelBuilder.Build(config, weights, Output, new BuildOptions(), Hf));
        Assert.Contains("o_proj", e.Message, StringComparison.Ordinal);
        AssertNothingWritten();
    }

    private ModelBuildException AssertBuildFails(string? hfFolder = null)
    {
        var e = Assert.Throws<ModelBuildException>(() => DecoderModelBuilder.BuildFromHuggingFace(hfFolder ?? Hf, Output, new BuildOptions()));
        AssertNothingWritten();
        return e;
    }

    private void AssertNothingWritten()
    {
        Assert.False(Directory.Exists(Output), "the output folder was created");
        Assert.Empty(Directory.GetFileSystemEntries(Models));
    }

    private static void Truncate(string path, long length)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Write);
        stream.SetLength(length);
    }

    /// <summary>Random weights that fail with an I/O error at one tensor, as a disk or network read might.</summary>
    private sealed class FailingWeights(string failingName) : Checkpoint.IWeightSource
    {
        private readonly Checkpoint.RandomWeights _inner = new(1);

        public bool Contains(string name) => _inner.Contains(name);

        public float[] Read(string name, ReadOnlySpan<long> expectedShape) =>
            name == failingName ? throw new IOException($"cannot read {name}") : _inner.Read(name, expectedShape);

        public void Dispose() => _inner.Dispose();
    }
}
