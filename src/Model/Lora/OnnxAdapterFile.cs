using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;

namespace InferenceServer.Model.Lora;

/// <summary>One named float32 tensor of an adapter file.</summary>
public sealed record AdapterTensor(string Name, long[] Dims, float[] Values);

/// <summary>
/// ONNX Runtime's adapter format (.onnx_adapter, what <c>OrtLoraAdapter</c> loads): a FlatBuffers
/// buffer with the identifier "TORT" whose root table Adapter holds format_version (1),
/// adapter_version, model_version and a vector of Parameter tables, each with a name, dims (int64),
/// an ONNX element type and the raw little-endian bytes. ONNX Runtime feeds the parameters as the
/// graph inputs of the same names. Only float32 parameters are written and read here.
/// </summary>
public static class OnnxAdapterFile
{
    private const int FormatVersion = 1;
    private const int FloatType = 1; // the format's TensorDataType.FLOAT, as in ONNX
    private static readonly byte[] Identifier = "TORT"u8.ToArray();

    /// <summary>Writes the tensors, front to back: every offset points forward, every array is 8-byte aligned.</summary>
    public static void Write(string path, IReadOnlyList<AdapterTensor> tensors, int adapterVersion = 1)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        var writer = new Writer();
        writer.U32(0); // root offset, patched below
        writer.Bytes(Identifier);

        // Adapter's vtable: its size, the table's size, then each field's offset in the table.
        var adapterVtable = writer.Position;
        foreach (var value in new ushort[] { 12, 20, 4, 8, 12, 16 })
            writer.U16(value);
        var adapter = writer.Position;
        writer.I32(adapter - adapterVtable);
        writer.I32(FormatVersion);
        writer.I32(adapterVersion);
        writer.I32(0); // model_version
        var parametersField = writer.Position;
        writer.U32(0);
        writer.PatchOffset(0, adapter);

        writer.PatchOffset(parametersField, writer.Position);
        writer.U32((uint)tensors.Count);
        var elements = writer.Position;
        for (var i = 0; i < tensors.Count; i++)
            writer.U32(0);

        for (var i = 0; i < tensors.Count; i++)
        {
            var tensor = tensors[i];
            long count = 1;
            foreach (var d in tensor.Dims)
                count *= d;
            if (count != tensor.Values.Length)
                throw new ArgumentException($"adapter tensor '{tensor.Name}': dims [{string.Join(", ", tensor.Dims)}] hold {count} values, not {tensor.Values.Length}", nameof(tensors));

            var vtable = writer.Position;
            foreach (var value in new ushort[] { 12, 20, 4, 8, 12, 16 })
                writer.U16(value);
            var table = writer.Position;
            writer.PatchOffset(elements + 4 * i, table);
            writer.I32(table - vtable);
            writer.U32(0); // name
            writer.U32(0); // dims
            writer.I32(FloatType);
            writer.U32(0); // raw_data

            writer.PatchOffset(table + 4, writer.Position);
            var name = Encoding.UTF8.GetBytes(tensor.Name);
            writer.U32((uint)name.Length);
            writer.Bytes(name);
            writer.Bytes([0]);

            writer.AlignVector();
            writer.PatchOffset(table + 8, writer.Position);
            writer.U32((uint)tensor.Dims.Length);
            foreach (var d in tensor.Dims)
                writer.I64(d);

            writer.AlignVector();
            writer.PatchOffset(table + 16, writer.Position);
            var raw = MemoryMarshal.AsBytes(tensor.Values.AsSpan());
            writer.U32((uint)raw.Length);
            writer.Bytes(raw);
        }
        File.WriteAllBytes(path, writer.ToArray());
    }

    /// <summary>Reads every parameter; anything out of bounds or not float32 is a <see cref="ModelLoadException"/>.</summary>
    public static IReadOnlyList<AdapterTensor> Read(string path)
    {
        if (!File.Exists(path))
            throw new ModelLoadException($"{path}: no such adapter file");
        var reader = new Reader(File.ReadAllBytes(path), path);
        if (reader.Length < 8 || !reader.Slice(4, 4).SequenceEqual(Identifier))
            throw new ModelLoadException($"{path}: not an ONNX Runtime adapter file (no \"TORT\" identifier)");
        var adapter = reader.Deref(0);
        var version = reader.FieldOffset(adapter, 0) is var versionAt and > 0 ? reader.I32(adapter + versionAt) : 0;
        if (version != FormatVersion)
            throw new ModelLoadException($"{path}: adapter format version {version}; version {FormatVersion} is supported");
        var parametersAt = reader.FieldOffset(adapter, 3);
        if (parametersAt == 0)
            return [];
        var vector = reader.Deref(adapter + parametersAt);
        var count = reader.Count(vector, 4);
        var result = new List<AdapterTensor>(count);
        for (var i = 0; i < count; i++)
        {
            var table = reader.Deref(vector + 4 + 4 * i);
            var nameAt = reader.FieldOffset(table, 0);
            var dimsAt = reader.FieldOffset(table, 1);
            var typeAt = reader.FieldOffset(table, 2);
            var rawAt = reader.FieldOffset(table, 3);
            if (nameAt == 0 || dimsAt == 0 || rawAt == 0)
                throw new ModelLoadException($"{path}: parameter {i} lacks a name, dims or data");
            var nameVector = reader.Deref(table + nameAt);
            var name = Encoding.UTF8.GetString(reader.Slice(nameVector + 4, reader.Count(nameVector, 1)));
            var type = typeAt == 0 ? 0 : reader.I32(table + typeAt);
            if (type != FloatType)
                throw new ModelLoadException($"{path}: parameter '{name}' has element type {type}; adapters here hold float32 (1)");
            var dimsVector = reader.Deref(table + dimsAt);
            var dims = new long[reader.Count(dimsVector, 8)];
            long elements = 1;
            for (var d = 0; d < dims.Length; d++)
            {
                dims[d] = BinaryPrimitives.ReadInt64LittleEndian(reader.Slice(dimsVector + 4 + 8 * d, 8));
                if (dims[d] < 0)
                    throw new ModelLoadException($"{path}: parameter '{name}' has a negative dimension");
                elements *= dims[d];
            }
            var rawVector = reader.Deref(table + rawAt);
            var bytes = reader.Count(rawVector, 1);
            if (bytes != elements * sizeof(float))
                throw new ModelLoadException($"{path}: parameter '{name}' [{string.Join(", ", dims)}] needs {elements * sizeof(float)} bytes but holds {bytes}");
            var values = new float[elements];
            reader.Slice(rawVector + 4, bytes).CopyTo(MemoryMarshal.AsBytes(values.AsSpan()));
            result.Add(new AdapterTensor(name, dims, values));
        }
        return result;
    }

    private sealed class Writer
    {
        private readonly MemoryStream _stream = new();

        public int Position => (int)_stream.Position;

        public void U16(ushort value) => Scalar(value);
        public void U32(uint value) => Scalar(value);
        public void I32(int value) => Scalar(value);
        public void I64(long value) => Scalar(value);
        public void Bytes(ReadOnlySpan<byte> bytes) => _stream.Write(bytes);

        private void Scalar<T>(T value) where T : unmanaged
        {
            if (!BitConverter.IsLittleEndian)
                throw new PlatformNotSupportedException("adapter files are written on little-endian machines");
            _stream.Write(MemoryMarshal.AsBytes(new ReadOnlySpan<T>(in value)));
        }

        /// <summary>Pads so that a vector's elements (after its 4-byte length) start 8-byte aligned.</summary>
        public void AlignVector()
        {
            while ((_stream.Position + 4) % 8 != 0)
                _stream.WriteByte(0);
        }

        /// <summary>Sets the offset field at <paramref name="field"/> to point at <paramref name="target"/>.</summary>
        public void PatchOffset(int field, int target)
        {
            var end = _stream.Position;
            _stream.Position = field;
            U32((uint)(target - field));
            _stream.Position = end;
        }

        public byte[] ToArray() => _stream.ToArray();
    }

    private readonly struct Reader(byte[] bytes, string path)
    {
        public int Length => bytes.Length;

        public ReadOnlySpan<byte> Slice(long start, long length) =>
            start >= 0 && length >= 0 && start + length <= bytes.Length
                ? bytes.AsSpan((int)start, (int)length)
                : throw new ModelLoadException($"{path}: truncated or malformed adapter file (bytes {start}..{start + length} of {bytes.Length})");

        public int I32(long at) => BinaryPrimitives.ReadInt32LittleEndian(Slice(at, 4));

        private uint U32(long at) => BinaryPrimitives.ReadUInt32LittleEndian(Slice(at, 4));

        /// <summary>The position an offset field points at (offsets are relative to the field).</summary>
        public long Deref(long field) => field + U32(field);

        /// <summary>A field's offset in its table from the table's vtable; 0 when absent.</summary>
        public int FieldOffset(long table, int field)
        {
            var vtable = table - I32(table);
            var vtableSize = BinaryPrimitives.ReadUInt16LittleEndian(Slice(vtable, 2));
            var entry = 4 + 2 * field;
            return entry + 2 <= vtableSize ? BinaryPrimitives.ReadUInt16LittleEndian(Slice(vtable + entry, 2)) : 0;
        }

        /// <summary>A vector's element count, checked against the bytes that follow it.</summary>
        public int Count(long vector, int elementSize)
        {
            var count = U32(vector);
            Slice(vector + 4, (long)count * elementSize);
            return (int)count;
        }
    }
}
