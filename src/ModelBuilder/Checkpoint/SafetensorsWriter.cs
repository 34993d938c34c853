using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;

namespace InferenceServer.ModelBuilder.Checkpoint;

/// <summary>
/// Writes float32 tensors as one .safetensors file: an 8-byte little-endian header length, the
/// JSON header (dtype, shape and byte range of each tensor), then the tensors back to back.
/// </summary>
public static class SafetensorsWriter
{
    public static void Write(Stream output, IReadOnlyList<HfTensor> tensors, IWeightSource weights)
    {
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(tensors);
        ArgumentNullException.ThrowIfNull(weights);
        using var headerJson = new MemoryStream();
        using (var json = new Utf8JsonWriter(headerJson))
        {
            json.WriteStartObject();
            json.WriteStartObject("__metadata__");
            json.WriteString("format", "pt");
            json.WriteEndObject();
            long offset = 0;
            foreach (var tensor in tensors)
            {
                var bytes = 4 * tensor.Shape.Aggregate(1L, (a, b) => a * b);
                json.WriteStartObject(tensor.Name);
                json.WriteString("dtype", "F32");
                json.WriteStartArray("shape");
                foreach (var d in tensor.Shape)
                    json.WriteNumberValue(d);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                json.WriteNumberValue(offset + bytes);
                json.WriteEndArray();
                json.WriteEndObject();
                offset += bytes;
            }
            json.WriteEndObject();
        }
        // The data starts 8-byte aligned: the header is padded with spaces, which JSON allows.
        var header = headerJson.ToArray();
        var padded = (header.Length + 7) / 8 * 8;
        Span<byte> length = stackalloc byte[8];
        System.Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(length, padded);
        output.Write(length);
        output.Write(header);
        output.Write(Encoding.ASCII.GetBytes(new string(' ', padded - header.Length)));
        foreach (var tensor in tensors)
            output.Write(MemoryMarshal.AsBytes(weights.Read(tensor.Name, tensor.Shape).AsSpan()));
    }
}
