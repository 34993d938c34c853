using Google.Protobuf;
using InferenceServer.Model;
using InferenceServer.ModelBuilder.Onnx;
using DataType = InferenceServer.ModelBuilder.Onnx.TensorProto.Types.DataType;

namespace InferenceServer.ModelBuilder;

/// <summary>What <see cref="GraphUpgrade.Upgrade"/> did.</summary>
public enum GraphUpgradeResult
{
    /// <summary>The graph was rewritten with the <see cref="DecoderGraph.LogitsToKeep"/> input.</summary>
    Upgraded,

    /// <summary>The graph already had the input; nothing was written.</summary>
    AlreadyCurrent,
}

/// <summary>
/// Brings a dense graph that this builder wrote before <see cref="DecoderGraph.LogitsToKeep"/>
/// existed up to the current contract, for a model whose original weights are gone: only
/// model.onnx is rewritten (its nodes that gathered each row's last position are replaced by the
/// selection of the last logits_to_keep positions, the input and its default are added), and
/// the external data file is never opened, so the weights stay byte for byte what they were.
/// With logits_to_keep left at its default the upgraded graph computes what the old one did.
/// </summary>
public static class GraphUpgrade
{
    // The nodes older graphs gathered each row's last position with, in the order they were written.
    private static readonly (string Name, string OpType)[] LastPositionNodes =
    [
        ("/ids/last_column", "Sub"),
        ("/logits/last_position", "Min"),
        ("/logits/index", "Unsqueeze"),
        ("/logits/index_expanded", "Expand"),
        (DecoderGraph.KeptHiddenNode, "GatherElements"),
    ];

    // Constants only those nodes read.
    private static readonly string[] LastPositionConstants = ["const/axes12", "const/hidden_shape"];

    // The tied vocabulary projection reshaped to [-1, 1, vocab] with this constant.
    private const string TiedReshapeNode = "/lm_head/unflatten";
    private const string TiedLogitsShape = "const/logits_shape";

    /// <summary>Upgrades the graph of a model folder in place (the file is replaced only once the new one is written).</summary>
    public static GraphUpgradeResult Upgrade(string folder)
    {
        var model = ModelFolder.Load(folder);
        if (model.Config.Model.Decoder.IsPaged)
            throw new ModelBuildException($"{model.Path}: the paged graph returns each sequence's last token only; only dense graphs take {DecoderGraph.LogitsToKeep}");
        var path = model.DecoderPath;
        ModelProto proto;
        try
        {
            proto = ModelProto.Parser.ParseFrom(File.ReadAllBytes(path));
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new ModelBuildException($"{path}: not an ONNX model ({e.Message})", e);
        }
        if (!Upgrade(proto.Graph, model.Config.Model.VocabSize, path))
            return GraphUpgradeResult.AlreadyCurrent;

        var staging = $"{path}.partial-{Guid.NewGuid():N}";
        try
        {
            using (var stream = File.Create(staging))
            using (var output = new CodedOutputStream(stream))
                proto.WriteTo(output);
            File.Move(staging, path, overwrite: true);
        }
        finally
        {
            if (File.Exists(staging))
                File.Delete(staging);
        }
        return GraphUpgradeResult.Upgraded;
    }

    /// <summary>Rewrites the graph in memory; false when it already has the input.</summary>
    internal static bool Upgrade(GraphProto graph, int vocabSize, string path)
    {
        if (graph.Input.Any(i => i.Name == DecoderGraph.LogitsToKeep))
            return false;

        // Find the old selection, check it is what this builder wrote, and take it out.
        var nodes = new NodeProto[LastPositionNodes.Length];
        for (var i = 0; i < nodes.Length; i++)
        {
            var (name, opType) = LastPositionNodes[i];
            nodes[i] = graph.Node.SingleOrDefault(n => n.Name == name && n.OpType == opType)
                ?? throw new ModelBuildException($"{path}: no {opType} node '{name}'; this graph was not written by this builder's dense variant (build the model again with build-model)");
        }
        var gather = nodes[^1];
        var normed = gather.Input[0];
        var kept = gather.Output[0];
        var insertAt = graph.Node.IndexOf(nodes[0]);
        foreach (var node in nodes)
            graph.Node.Remove(node);
        foreach (var name in LastPositionConstants)
        {
            if (!graph.Node.Any(n => n.Input.Contains(name)))
                graph.Initializer.Remove(graph.Initializer.Single(t => t.Name == name));
        }

        // The new selection, where the old one was, over the same hidden states and into the same
        // value the vocabulary projection reads (the node keeps its name, its operator changes).
        var builder = new GraphBuilder(graph);
        var firstNew = graph.Node.Count;
        var output = DecoderGraph.LastPositionsOfEachRow(builder, normed, Need(graph, "/mask/reduce_sum", path), Need(graph, "/ids/sequence_length", path));
        if (output != kept)
            throw new InvalidOperationException($"the kept positions came out as {output}, not {kept}");
        MoveNodes(graph, firstNew, insertAt);

        var tied = graph.Node.SingleOrDefault(n => n.Name == TiedReshapeNode);
        if (tied is not null && tied.Input[1] == TiedLogitsShape)
        {
            graph.Initializer.Remove(graph.Initializer.Single(t => t.Name == TiedLogitsShape));
            firstNew = graph.Node.Count;
            tied.Input[1] = DecoderGraph.LogitsShape(builder, kept, vocabSize);
            MoveNodes(graph, firstNew, graph.Node.IndexOf(tied));
        }

        // The logits stay declared [batch, 1, vocab], their shape at the input's default.
        builder.Input(DecoderGraph.LogitsToKeep, DataType.Int64);
        builder.Int64Scalar(DecoderGraph.LogitsToKeep, 1);
        return true;
    }

    // The output of the node of that name, which the new selection reads.
    private static string Need(GraphProto graph, string nodeName, string path) =>
        graph.Node.SingleOrDefault(n => n.Name == nodeName)?.Output[0]
        ?? throw new ModelBuildException($"{path}: no node '{nodeName}'; this graph was not written by this builder's dense variant");

    // Nodes appended from index `from` on go to `index`, keeping the list in topological order.
    private static void MoveNodes(GraphProto graph, int from, int index)
    {
        var added = graph.Node.Skip(from).ToList();
        while (graph.Node.Count > from)
            graph.Node.RemoveAt(graph.Node.Count - 1);
        for (var i = 0; i < added.Count; i++)
            graph.Node.Insert(index + i, added[i]);
    }
}
