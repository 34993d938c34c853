using System.Globalization;

namespace InferenceServer.Model;

/// <summary>
/// The per-layer names of genai_config.json (past_key_names, present_value_names, ...): a pattern
/// whose <see cref="Placeholder"/> stands for the layer index, as onnxruntime-genai writes them.
/// </summary>
public static class LayerNames
{
    public const string Placeholder = "%d";

    /// <summary>The name of <paramref name="layer"/>'s input or output.</summary>
    public static string For(string pattern, int layer)
    {
        ArgumentNullException.ThrowIfNull(pattern);
        return pattern.Replace(Placeholder, layer.ToString(CultureInfo.InvariantCulture), StringComparison.Ordinal);
    }

    /// <summary>The names of layers 0 to <paramref name="layerCount"/> - 1.</summary>
    public static string[] ForAll(string pattern, int layerCount)
    {
        var names = new string[layerCount];
        for (var i = 0; i < layerCount; i++)
            names[i] = For(pattern, i);
        return names;
    }
}
