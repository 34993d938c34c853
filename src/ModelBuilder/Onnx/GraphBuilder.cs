using System.Runtime.InteropServices;
using Google.Protobuf;

namespace InferenceServer.ModelBuilder.Onnx;

/// <summary>
/// Small helpers for writing an ONNX graph node by node. Initializers above a size go to the
/// external data file; small constants stay inline.
/// </summary>
public sealed class GraphBuilder
{
    public const string MicrosoftDomain = "com.microsoft";
    private const int InlineLimitBytes = 1024;
    private readonly ExternalDataWriter? _externalData;
    private int _nodeCount;

    /// <summary>A new graph whose large initializers go to <paramref name="externalData"/>.</summary>
    public GraphBuilder(ExternalDataWriter externalData)
    {
        _externalData = externalData;
        Graph = new GraphProto { Name = "decoder" };
    }

    /// <summary>Adds to an existing graph; only small (inline) initializers can be added, its data file stays as it is.</summary>
    public GraphBuilder(GraphProto graph)
    {
        ArgumentNullException.ThrowIfNull(graph);
        Graph = graph;
    }

    public GraphProto Graph { get; }

    public void Input(string name, TensorProto.Types.DataType type, params object[] dims) => Graph.Input.Add(ValueInfo(name, type, dims));

    public void Output(string name, TensorProto.Types.DataType type, params object[] dims) => Graph.Output.Add(ValueInfo(name, type, dims));

    private static ValueInfoProto ValueInfo(string name, TensorProto.Types.DataType type, object[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (var d in dims)
        {
            shape.Dim.Add(d switch
            {
                int i => new TensorShapeProto.Types.Dimension { DimValue = i },
                long l => new TensorShapeProto.Types.Dimension { DimValue = l },
                string s => new TensorShapeProto.Types.Dimension { DimParam = s },
                _ => throw new ArgumentException($"dimension {d} must be a number or a name"),
            });
        }
        return new ValueInfoProto
        {
            Name = name,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)type, Shape = shape } },
        };
    }

    /// <summary>Adds a node; outputs are named after the node, "" leaves an optional output out.</summary>
    public string[] Node(string opType, string name, IReadOnlyList<string> inputs, int outputCount = 1,
        string domain = "", IEnumerable<AttributeProto>? attributes = null, IReadOnlyList<string>? outputNames = null)
    {
        var node = new NodeProto { OpType = opType, Name = name, Domain = domain };
        node.Input.AddRange(inputs);
        var outputs = outputNames?.ToArray() ?? Enumerable.Range(0, outputCount).Select(i => $"{name}/output_{i}").ToArray();
        node.Output.AddRange(outputs);
        if (attributes is not null)
            node.Attribute.AddRange(attributes);
        Graph.Node.Add(node);
        _nodeCount++;
        return outputs;
    }

    /// <summary>Single-output convenience form of <see cref="Node"/>.</summary>
    public string Op(string opType, string name, IReadOnlyList<string> inputs, string domain = "", params AttributeProto[] attributes) =>
        Node(opType, name, inputs, 1, domain, attributes)[0];

    public int NodeCount => _nodeCount;

    public string Initializer<T>(string name, TensorProto.Types.DataType type, ReadOnlySpan<T> data, params long[] dims) where T : unmanaged
    {
        var tensor = new TensorProto { Name = name, DataType = (int)type };
        tensor.Dims.AddRange(dims);
        var bytes = MemoryMarshal.AsBytes(data);
        if (bytes.Length > InlineLimitBytes)
        {
            if (_externalData is null)
                throw new InvalidOperationException($"initializer {name} ({bytes.Length} bytes) belongs in an external data file, and this graph is edited without one");
            _externalData.Write(tensor, bytes);
        }
        else
            tensor.RawData = ByteString.CopyFrom(bytes);
        Graph.Initializer.Add(tensor);
        return name;
    }

    public string Int64Constant(string name, params long[] values) =>
        Initializer<long>(name, TensorProto.Types.DataType.Int64, values, values.Length);

    public string Int64Scalar(string name, long value)
    {
        var tensor = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Int64 };
        tensor.RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(new ReadOnlySpan<long>(ref value)));
        Graph.Initializer.Add(tensor);
        return name;
    }

    public static AttributeProto Attr(string name, long value) =>
        new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value };

    public static AttributeProto Attr(string name, float value) =>
        new() { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = value };

    public static AttributeProto Ints(string name, params long[] values)
    {
        var attribute = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
        attribute.Ints.AddRange(values);
        return attribute;
    }
}
