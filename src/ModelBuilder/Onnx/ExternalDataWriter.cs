using System.Globalization;

namespace InferenceServer.ModelBuilder.Onnx;

/// <summary>
/// Appends initializer bytes to the graph's external data file as they are produced, so a model
/// far larger than memory (or than protobuf's 2 GB limit) never sits in one buffer. Each tensor
/// starts on a 64-byte boundary.
/// </summary>
public sealed class ExternalDataWriter : IDisposable
{
    private const int Alignment = 64;
    private readonly FileStream _stream;

    /// <summary>The file name as recorded in the graph (relative to the graph file).</summary>
    public string Location { get; }

    public ExternalDataWriter(string folder, string location)
    {
        Location = location;
        _stream = new FileStream(Path.Combine(folder, location), FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20);
    }

    /// <summary>Writes the bytes and fills in the tensor's external-data fields.</summary>
    public void Write(TensorProto tensor, ReadOnlySpan<byte> data)
    {
        var padding = (int)((Alignment - _stream.Position % Alignment) % Alignment);
        for (var i = 0; i < padding; i++)
            _stream.WriteByte(0);
        var offset = _stream.Position;
        _stream.Write(data);
        tensor.DataLocation = TensorProto.Types.DataLocation.External;
        tensor.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = Location });
        tensor.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset.ToString(CultureInfo.InvariantCulture) });
        tensor.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = data.Length.ToString(CultureInfo.InvariantCulture) });
    }

    public void Dispose() => _stream.Dispose();
}
