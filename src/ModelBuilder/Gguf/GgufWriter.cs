using System.Runtime.InteropServices;
using System.Text;

namespace InferenceServer.ModelBuilder.Gguf;

/// <summary>How a tensor's elements are stored in a GGUF file (ggml's type numbers).</summary>
public enum GgufTensorType : uint
{
    F32 = 0,
    F16 = 1,
}

/// <summary>
/// Writes a GGUF (version 3) file: the header (magic, version, tensor count, metadata count),
/// the metadata key/value pairs, one info record per tensor (name, dimensions innermost first,
/// type, offset into the data section), then the tensor data, each tensor starting at a multiple
/// of the alignment. Tensors are produced one at a time while writing, so a model never has to
/// be in memory whole.
/// </summary>
public sealed class GgufWriter
{
    public const uint Version = 3;
    public const int Alignment = 32;

    // GGUF's value type numbers.
    private enum ValueType : uint
    {
        UInt32 = 4,
        Int32 = 5,
        Float32 = 6,
        Bool = 7,
        String = 8,
        Array = 9,
    }

    private sealed record Tensor(string Name, long[] Shape, GgufTensorType Type, Func<float[]> Data)
    {
        public long ByteCount => Shape.Aggregate(1L, (a, b) => a * b) * (Type == GgufTensorType.F32 ? 4 : 2);
    }

    private readonly List<(string Key, Action<BinaryWriter> Write)> _metadata = [];
    private readonly List<Tensor> _tensors = [];
    private readonly HashSet<string> _keys = new(StringComparer.Ordinal);

    public void AddString(string key, string value) => Add(key, w => { w.Write((uint)ValueType.String); WriteString(w, value); });

    public void AddUInt32(string key, uint value) => Add(key, w => { w.Write((uint)ValueType.UInt32); w.Write(value); });

    public void AddFloat32(string key, float value) => Add(key, w => { w.Write((uint)ValueType.Float32); w.Write(value); });

    public void AddBool(string key, bool value) => Add(key, w => { w.Write((uint)ValueType.Bool); w.Write(value ? (byte)1 : (byte)0); });

    public void AddStrings(string key, IReadOnlyList<string> values) => Add(key, w =>
    {
        WriteArrayHeader(w, ValueType.String, values.Count);
        foreach (var value in values)
            WriteString(w, value);
    });

    public void AddInt32s(string key, IReadOnlyList<int> values) => Add(key, w =>
    {
        WriteArrayHeader(w, ValueType.Int32, values.Count);
        foreach (var value in values)
            w.Write(value);
    });

    /// <summary>A tensor of a row-major <paramref name="shape"/> (outermost first, as PyTorch and safetensors give it).</summary>
    public void AddTensor(string name, long[] shape, GgufTensorType type, Func<float[]> data)
    {
        if (_tensors.Any(t => t.Name == name))
            throw new ArgumentException($"tensor '{name}' is added twice", nameof(name));
        _tensors.Add(new Tensor(name, shape, type, data));
    }

    public void Write(Stream output)
    {
        ArgumentNullException.ThrowIfNull(output);
        using var writer = new BinaryWriter(output, Encoding.UTF8, leaveOpen: true);
        writer.Write("GGUF"u8);
        writer.Write(Version);
        writer.Write((ulong)_tensors.Count);
        writer.Write((ulong)_metadata.Count);
        foreach (var (key, write) in _metadata)
        {
            WriteString(writer, key);
            write(writer);
        }
        long offset = 0;
        foreach (var tensor in _tensors)
        {
            WriteString(writer, tensor.Name);
            writer.Write((uint)tensor.Shape.Length);
            // GGUF lists dimensions innermost first (ggml's ne[0] is the row length).
            for (var d = tensor.Shape.Length - 1; d >= 0; d--)
                writer.Write((ulong)tensor.Shape[d]);
            writer.Write((uint)tensor.Type);
            writer.Write((ulong)offset);
            offset = Align(offset + tensor.ByteCount);
        }
        writer.Flush();
        Pad(writer, output.Position);
        foreach (var tensor in _tensors)
        {
            var values = tensor.Data();
            if (values.LongLength * (tensor.Type == GgufTensorType.F32 ? 4 : 2) != tensor.ByteCount)
                throw new ModelBuildException($"tensor '{tensor.Name}': {values.Length} values for shape [{string.Join(", ", tensor.Shape)}]");
            if (tensor.Type == GgufTensorType.F32)
            {
                writer.Write(MemoryMarshal.AsBytes(values.AsSpan()));
            }
            else
            {
                var halves = new Half[values.Length];
                System.Numerics.Tensors.TensorPrimitives.ConvertToHalf(values, halves);
                writer.Write(MemoryMarshal.AsBytes(halves.AsSpan()));
            }
            Pad(writer, tensor.ByteCount);
        }
        writer.Flush();
    }

    private void Add(string key, Action<BinaryWriter> write)
    {
        if (!_keys.Add(key))
            throw new ArgumentException($"metadata key '{key}' is added twice", nameof(key));
        _metadata.Add((key, write));
    }

    private static long Align(long offset) => (offset + Alignment - 1) / Alignment * Alignment;

    private static void Pad(BinaryWriter writer, long written)
    {
        for (var i = written; i < Align(written); i++)
            writer.Write((byte)0);
    }

    // GGUF strings: a uint64 byte length, then UTF-8 without a terminator.
    private static void WriteString(BinaryWriter writer, string value)
    {
        var bytes = Encoding.UTF8.GetBytes(value);
        writer.Write((ulong)bytes.Length);
        writer.Write(bytes);
    }

    private static void WriteArrayHeader(BinaryWriter writer, ValueType elementType, int count)
    {
        writer.Write((uint)ValueType.Array);
        writer.Write((uint)elementType);
        writer.Write((ulong)count);
    }
}
