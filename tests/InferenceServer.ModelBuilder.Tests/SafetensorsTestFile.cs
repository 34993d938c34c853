using System.Buffers.Binary;
using System.Text;
using System.Text.Json;

namespace InferenceServer.ModelBuilder.Tests;

/// <summary>One tensor of a .safetensors file as the tests write it: dtype, shape and raw bytes.</summary>
internal sealed record SafetensorsTensor(string Name, string DType, long[] Shape, byte[] Data);

/// <summary>
/// Reads and writes .safetensors files for the tests, independently of the builder's reader:
/// an 8-byte little-endian header length, a JSON header
/// {name: {dtype, shape, data_offsets: [begin, end]}} and the tensors' bytes back to back.
/// Lets a test take a fixture apart and put it back together with one thing changed.
/// </summary>
internal static class SafetensorsTestFile
{
    public static List<SafetensorsTensor> Read(string path)
    {
        var bytes = File.ReadAllBytes(path);
        var headerLength = checked((int)BinaryPrimitives.ReadInt64LittleEndian(bytes));
        var dataStart = 8 + headerLength;
        using var header = JsonDocument.Parse(bytes.AsMemory(8, headerLength));
        var tensors = new List<SafetensorsTensor>();
        foreach (var property in header.RootElement.EnumerateObject())
        {
            if (property.Name == "__metadata__")
                continue;
            var shape = property.Value.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()).ToArray();
            var offsets = property.Value.GetProperty("data_offsets").EnumerateArray().Select(d => checked((int)d.GetInt64())).ToArray();
            tensors.Add(new SafetensorsTensor(property.Name, property.Value.GetProperty("dtype").GetString()!, shape,
                bytes.AsSpan(dataStart + offsets[0], offsets[1] - offsets[0]).ToArray()));
        }
        return tensors;
    }

    public static void Write(string path, IEnumerable<SafetensorsTensor> tensors)
    {
        var list = tensors.ToList();
        using var header = new MemoryStream();
        using (var json = new Utf8JsonWriter(header))
        {
            json.WriteStartObject();
            json.WriteStartObject("__metadata__");
            json.WriteString("format", "pt");
            json.WriteEndObject();
            long offset = 0;
            foreach (var tensor in list)
            {
                json.WriteStartObject(tensor.Name);
                json.WriteString("dtype", tensor.DType);
                json.WriteStartArray("shape");
                foreach (var d in tensor.Shape)
                    json.WriteNumberValue(d);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                json.WriteNumberValue(offset + tensor.Data.Length);
                json.WriteEndArray();
                json.WriteEndObject();
                offset += tensor.Data.Length;
            }
            json.WriteEndObject();
        }
        // The format pads the header with spaces so the data starts 8-byte aligned.
        while (header.Length % 8 != 0)
            header.WriteByte((byte)' ');
        WriteRaw(path, header.ToArray(), list.SelectMany(t => t.Data).ToArray());
    }

    /// <summary>A file with exactly the given header bytes (valid JSON or not) and data.</summary>
    public static void WriteRaw(string path, byte[] header, byte[] data)
    {
        using var stream = File.Create(path);
        Span<byte> length = stackalloc byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(length, header.Length);
        stream.Write(length);
        stream.Write(header);
        stream.Write(data);
    }

    public static void WriteRaw(string path, string header, byte[] data) => WriteRaw(path, Encoding.UTF8.GetBytes(header), data);
}
