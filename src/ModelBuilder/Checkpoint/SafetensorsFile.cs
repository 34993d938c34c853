using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;
using System.Text.Json;

namespace InferenceServer.ModelBuilder.Checkpoint;

/// <summary>
/// One .safetensors file: an 8-byte little-endian header length, a JSON header naming each
/// tensor's dtype, shape and byte range, then the raw data. The file is memory-mapped; tensors
/// are converted to float32 when read.
/// </summary>
public sealed unsafe class SafetensorsFile : IDisposable
{
    private readonly MemoryMappedFile _map;
    private readonly MemoryMappedViewAccessor _view;
    private readonly byte* _base;
    private readonly long _dataStart;
    private readonly Dictionary<string, Entry> _entries;

    public string Path { get; }
    public IReadOnlyCollection<string> Names => _entries.Keys;

    private readonly record struct Entry(string DType, long[] Shape, long Begin, long End);

    private SafetensorsFile(string path, MemoryMappedFile map, MemoryMappedViewAccessor view, long dataStart, Dictionary<string, Entry> entries)
    {
        Path = path;
        _map = map;
        _view = view;
        _dataStart = dataStart;
        _entries = entries;
        byte* pointer = null;
        _view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
        _base = pointer + _view.PointerOffset;
    }

    public static SafetensorsFile Open(string path)
    {
        var length = new FileInfo(path).Length;
        if (length < 8)
            throw new ModelBuildException($"{path}: truncated safetensors file ({length} bytes, not even a header length)");
        Span<byte> prefix = stackalloc byte[8];
        using (var stream = File.OpenRead(path))
            stream.ReadExactly(prefix);
        var headerLength = BinaryPrimitives.ReadInt64LittleEndian(prefix);
        if (headerLength <= 0 || headerLength > length - 8)
            throw new ModelBuildException($"{path}: truncated safetensors file (header of {headerLength} bytes in a file of {length})");
        var header = new byte[headerLength];
        using (var stream = File.OpenRead(path))
        {
            stream.Position = 8;
            stream.ReadExactly(header);
        }
        var dataStart = 8 + headerLength;
        var entries = ParseHeader(path, header, length - dataStart);
        var map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        var view = map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
        return new SafetensorsFile(path, map, view, dataStart, entries);
    }

    private static Dictionary<string, Entry> ParseHeader(string path, byte[] header, long dataLength)
    {
        var entries = new Dictionary<string, Entry>(StringComparer.Ordinal);
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(header);
        }
        catch (JsonException e)
        {
            throw new ModelBuildException($"{path}: the safetensors header is not valid JSON ({e.Message})", e);
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new ModelBuildException($"{path}: the safetensors header must be a JSON object, not {doc.RootElement.ValueKind}");
            foreach (var property in doc.RootElement.EnumerateObject())
            {
                if (property.Name == "__metadata__")
                    continue;
                var value = property.Value;
                try
                {
                    var dtype = value.GetProperty("dtype").GetString() ?? "";
                    var shape = value.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()).ToArray();
                    var offsets = value.GetProperty("data_offsets").EnumerateArray().Select(d => d.GetInt64()).ToArray();
                    if (offsets.Length != 2)
                        throw new ModelBuildException($"{path}: tensor '{property.Name}' has {offsets.Length} data offsets, expected 2");
                    var entry = new Entry(dtype, shape, offsets[0], offsets[1]);
                    if (entry.Begin < 0 || entry.End < entry.Begin || entry.End > dataLength)
                        throw new ModelBuildException($"{path}: truncated safetensors file: tensor '{property.Name}' spans bytes {entry.Begin}..{entry.End} but the data section holds {dataLength}");
                    var elements = shape.Aggregate(1L, (a, b) => a * b);
                    var expected = elements * ElementSize(path, property.Name, dtype);
                    if (expected != entry.End - entry.Begin)
                        throw new ModelBuildException($"{path}: tensor '{property.Name}' ({dtype} [{string.Join(", ", shape)}]) needs {expected} bytes but spans {entry.End - entry.Begin}");
                    entries[property.Name] = entry;
                }
                catch (Exception e) when (e is KeyNotFoundException or InvalidOperationException or FormatException)
                {
                    throw new ModelBuildException($"{path}: tensor '{property.Name}' has a malformed header entry ({e.Message})", e);
                }
            }
        }
        return entries;
    }

    private static int ElementSize(string path, string name, string dtype) => dtype switch
    {
        "F32" => 4,
        "F16" or "BF16" => 2,
        _ => throw new ModelBuildException($"{path}: tensor '{name}' has dtype {dtype}; supported are F32, F16 and BF16"),
    };

    public bool Contains(string name) => _entries.ContainsKey(name);

    public IReadOnlyList<long> ShapeOf(string name) => _entries[name].Shape;

    public float[] Read(string name, ReadOnlySpan<long> expectedShape)
    {
        if (!_entries.TryGetValue(name, out var entry))
            throw new ModelBuildException($"{Path}: tensor '{name}' is missing");
        if (!entry.Shape.AsSpan().SequenceEqual(expectedShape))
            throw new ModelBuildException($"{Path}: tensor '{name}' has shape [{string.Join(", ", entry.Shape)}], the config implies [{string.Join(", ", expectedShape.ToArray())}]");
        var count = checked((int)entry.Shape.Aggregate(1L, (a, b) => a * b));
        var result = new float[count];
        var source = _base + _dataStart + entry.Begin;
        switch (entry.DType)
        {
            case "F32":
                new ReadOnlySpan<byte>(source, count * 4).CopyTo(MemoryMarshal.AsBytes(result.AsSpan()));
                break;
            case "F16":
                System.Numerics.Tensors.TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(source, count), result);
                break;
            case "BF16":
                var raw = new ReadOnlySpan<ushort>(source, count);
                var bits = MemoryMarshal.Cast<float, uint>(result.AsSpan());
                for (var i = 0; i < count; i++)
                    bits[i] = (uint)raw[i] << 16;
                break;
        }
        return result;
    }

    public void Dispose()
    {
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _map.Dispose();
    }
}
