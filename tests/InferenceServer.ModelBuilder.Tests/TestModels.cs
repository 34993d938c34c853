using System.Text.Json.Nodes;
using InferenceServer.ModelBuilder.Onnx;
using InferenceServer.Tests;
using DataType = InferenceServer.ModelBuilder.Onnx.TensorProto.Types.DataType;

namespace InferenceServer.ModelBuilder.Tests;

/// <summary>Copies of the oracle fixtures that a test may change.</summary>
internal static class FixtureCopy
{
    /// <summary>Copies tests/fixtures/oracle/{name} (config, weights, tokenizer) into a new folder.</summary>
    public static string Of(string fixture, string destination)
    {
        Directory.CreateDirectory(destination);
        foreach (var file in Directory.GetFiles(TestPaths.Oracle(fixture)))
            File.Copy(file, Path.Combine(destination, Path.GetFileName(file)));
        return destination;
    }

    /// <summary>Rewrites the folder's config.json with one change.</summary>
    public static void EditConfig(string folder, Action<JsonObject> edit)
    {
        var path = Path.Combine(folder, "config.json");
        var config = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        edit(config);
        File.WriteAllText(path, config.ToJsonString());
    }
}

/// <summary>A written model.onnx parsed with the generated protobuf classes, plus its external data.</summary>
internal sealed class OnnxTestModel
{
    public string Folder { get; }
    public ModelProto Model { get; }
    public GraphProto Graph => Model.Graph;
    public string DataPath => Path.Combine(Folder, DecoderModelBuilder.DataFileName);

    private OnnxTestModel(string folder, ModelProto model)
    {
        Folder = folder;
        Model = model;
    }

    public static OnnxTestModel Load(string folder) =>
        new(folder, ModelProto.Parser.ParseFrom(File.ReadAllBytes(Path.Combine(folder, DecoderModelBuilder.GraphFileName))));

    public TensorProto Initializer(string name) => Graph.Initializer.Single(i => i.Name == name);

    public IReadOnlyList<NodeProto> Nodes(string opType) => Graph.Node.Where(n => n.OpType == opType).ToList();

    /// <summary>An initializer's bytes, from the data file or from the graph itself.</summary>
    public byte[] Bytes(TensorProto tensor)
    {
        if (tensor.DataLocation != TensorProto.Types.DataLocation.External)
            return tensor.RawData.ToByteArray();
        var offset = long.Parse(External(tensor, "offset"), System.Globalization.CultureInfo.InvariantCulture);
        var length = int.Parse(External(tensor, "length"), System.Globalization.CultureInfo.InvariantCulture);
        using var stream = File.OpenRead(Path.Combine(Folder, External(tensor, "location")));
        stream.Position = offset;
        var bytes = new byte[length];
        stream.ReadExactly(bytes);
        return bytes;
    }

    public static string External(TensorProto tensor, string key) => tensor.ExternalData.Single(e => e.Key == key).Value;

    public static long Attribute(NodeProto node, string name) => node.Attribute.Single(a => a.Name == name).I;

    /// <summary>A value's dimensions, symbolic ones by name: ["batch_size", "1", "320"].</summary>
    public static string[] Dims(ValueInfoProto value) =>
        value.Type.TensorType.Shape.Dim.Select(d => d.ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimParam
            ? d.DimParam
            : d.DimValue.ToString(System.Globalization.CultureInfo.InvariantCulture)).ToArray();

    public static DataType ElementType(ValueInfoProto value) => (DataType)value.Type.TensorType.ElemType;

    public static int ElementSize(DataType type) => type switch
    {
        DataType.Float or DataType.Int32 => 4,
        DataType.Float16 => 2,
        DataType.Int64 => 8,
        DataType.Uint8 => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "not a type the builder writes"),
    };
}
