using System.Globalization;
using System.Text.RegularExpressions;

namespace InferenceServer.Model.Lora;

/// <summary>
/// A projection of a decoder layer that adapters can change, as our graphs pack it: one matrix
/// multiply for q, k and v together, one for o, one for gate and up together, one for down.
/// <see cref="Modules"/> are the Hugging Face module names it packs, in the order their outputs
/// are concatenated.
/// </summary>
public sealed record LoraProjection(string Name, IReadOnlyList<string> Modules);

/// <summary>
/// The names that tie a graph built with adapter inputs, the adapter files and the runner together.
/// Per layer and packed projection, the graph has two inputs: <c>model.layers.N.PROJECTION.lora_A</c>
/// [adapters, in, rank] and <c>.lora_B</c> [adapters, rank, out], and one input for the whole step,
/// <see cref="AdapterIndex"/> [rows], that picks each row's adapter out of the stacks. An adapter
/// file holds the same names with one adapter in the stack ([1, in, rank], [1, rank, out]).
/// </summary>
public static partial class LoraNames
{
    /// <summary>The step input that names each row's adapter: its index into the stacked inputs.</summary>
    public const string AdapterIndex = "lora_index";

    public const string ASuffix = ".lora_A";
    public const string BSuffix = ".lora_B";

    /// <summary>The folder of a model folder that holds its adapters, one folder per adapter.</summary>
    public const string AdaptersFolder = "adapters";

    /// <summary>An adapter's weights in ONNX Runtime's adapter format (flatbuffers).</summary>
    public const string WeightsFileName = "adapter.onnx_adapter";

    /// <summary>What the adapter was converted from: rank, alpha, scale, target modules, base model.</summary>
    public const string ConfigFileName = "adapter.json";

    public static IReadOnlyList<LoraProjection> Projections { get; } =
    [
        new("self_attn.qkv_proj", ["q_proj", "k_proj", "v_proj"]),
        new("self_attn.o_proj", ["o_proj"]),
        new("mlp.gate_up_proj", ["gate_proj", "up_proj"]),
        new("mlp.down_proj", ["down_proj"]),
    ];

    /// <summary>Every module name an adapter can target.</summary>
    public static IReadOnlyList<string> Modules { get; } = Projections.SelectMany(p => p.Modules).ToArray();

    /// <summary>The packed projection a Hugging Face module belongs to, or null.</summary>
    public static LoraProjection? ProjectionOf(string module) => Projections.FirstOrDefault(p => p.Modules.Contains(module));

    public static string A(int layer, LoraProjection projection) => $"{Prefix(layer, projection)}{ASuffix}";

    public static string B(int layer, LoraProjection projection) => $"{Prefix(layer, projection)}{BSuffix}";

    private static string Prefix(int layer, LoraProjection projection) =>
        string.Create(CultureInfo.InvariantCulture, $"model.layers.{layer}.{projection.Name}");

    /// <summary>Splits an input name of the convention into layer, projection and which half.</summary>
    public static bool TryParse(string name, out int layer, out LoraProjection projection, out bool isB)
    {
        layer = 0;
        projection = null!;
        isB = false;
        var match = InputName().Match(name);
        if (!match.Success || !int.TryParse(match.Groups[1].ValueSpan, NumberStyles.None, CultureInfo.InvariantCulture, out layer))
            return false;
        var found = Projections.FirstOrDefault(p => p.Name == match.Groups[2].Value);
        if (found is null)
            return false;
        projection = found;
        isB = match.Groups[3].Value == "B";
        return true;
    }

    [GeneratedRegex(@"^model\.layers\.(\d+)\.([a-z_]+\.[a-z_]+)\.lora_(A|B)$", RegexOptions.CultureInvariant)]
    private static partial Regex InputName();
}
