using InferenceServer.Model.Lora;
using InferenceServer.Tests;
using Microsoft.ML.OnnxRuntime;

namespace InferenceServer.Model.Tests;

public sealed class OnnxAdapterFileTests
{
    private static readonly AdapterTensor[] Tensors =
    [
        new("model.layers.0.self_attn.qkv_proj.lora_A", [1, 3, 2], [1, 2, 3, 4, 5, 6]),
        new("ünïcode name", [2], [-0.5f, float.MaxValue]),
        new("empty", [1, 4, 0], []),
    ];

    [Fact]
    public void What_is_written_reads_back_and_ONNX_Runtime_accepts_it()
    {
        using var temp = new TempFolder();
        var path = temp.Combine("a.onnx_adapter");
        OnnxAdapterFile.Write(path, Tensors);

        var read = OnnxAdapterFile.Read(path);
        Assert.Equal(Tensors.Select(t => t.Name), read.Select(t => t.Name));
        for (var i = 0; i < Tensors.Length; i++)
        {
            Assert.Equal(Tensors[i].Dims, read[i].Dims);
            Assert.Equal(Tensors[i].Values, read[i].Values);
        }
        // ONNX Runtime verifies the FlatBuffers layout (offsets, alignment, identifier, version) when it loads.
        using var adapter = OrtLoraAdapter.Create(path, null);
        Assert.False(adapter.IsInvalid);
    }

    [Fact]
    public void Another_format_version_and_mismatched_values_are_refused()
    {
        using var temp = new TempFolder();
        var path = temp.Combine("a.onnx_adapter");
        OnnxAdapterFile.Write(path, Tensors);
        var bytes = File.ReadAllBytes(path);
        bytes[24] = 2; // format_version, the root table's first field
        File.WriteAllBytes(path, bytes);
        var version = Assert.Throws<ModelLoadException>(() => OnnxAdapterFile.Read(path));
        Assert.Contains("adapter format version 2; version 1 is supported", version.Message, StringComparison.Ordinal);

        var mismatch = Assert.Throws<ArgumentException>(() => OnnxAdapterFile.Write(path, [new AdapterTensor("x", [2, 2], [1, 2, 3])]));
        Assert.Contains("dims [2, 2] hold 4 values, not 3", mismatch.Message, StringComparison.Ordinal);
        Assert.Throws<ModelLoadException>(() => OnnxAdapterFile.Read(temp.Combine("missing.onnx_adapter")));
    }
}
