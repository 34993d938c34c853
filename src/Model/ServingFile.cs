using System.Text.Json;

namespace InferenceServer.Model;

/// <summary>
/// serving.json, the optional file of a model folder that says how the model wants to be
/// prompted, which only whoever trained it knows. Its one key so far is the fill-in-the-middle
/// order; the server reads it, build-model writes it (and carries it from a Hugging Face folder
/// that has one, as a training run that knows its order leaves it beside the weights).
/// </summary>
public static class ServingFile
{
    public const string FileName = "serving.json";
    public const string FimOrderKey = "fim_order";

    /// <summary>Prefix, suffix, middle: the order every FIM-trained model knows, and the default.</summary>
    public const string PrefixSuffixMiddle = "prefix-suffix-middle";

    /// <summary>Suffix, prefix, middle: for models trained with both orders; only a prompt's end changes as a person types.</summary>
    public const string SuffixPrefixMiddle = "suffix-prefix-middle";

    public static IReadOnlyList<string> FimOrders { get; } = [PrefixSuffixMiddle, SuffixPrefixMiddle];

    /// <summary>The folder's fill-in-the-middle order; null when it has no serving.json or the file names none.</summary>
    /// <exception cref="ModelLoadException">The file is not JSON or names an unknown order.</exception>
    public static string? ReadFimOrder(string folder)
    {
        ArgumentNullException.ThrowIfNull(folder);
        var path = Path.Combine(folder, FileName);
        if (!File.Exists(path))
            return null;
        try
        {
            using var document = JsonDocument.Parse(File.ReadAllBytes(path));
            if (!document.RootElement.TryGetProperty(FimOrderKey, out var order))
                return null;
            var name = order.GetString();
            return FimOrders.Contains(name)
                ? name
                : throw new ModelLoadException($"{path}: {FimOrderKey} is '{name}'; expected {string.Join(" or ", FimOrders)}");
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException)
        {
            throw new ModelLoadException($"{path}: {e.Message}", e);
        }
    }

    /// <summary>Writes (or replaces) the folder's serving.json with the given fill-in-the-middle order.</summary>
    public static void WriteFimOrder(string folder, string fimOrder)
    {
        ArgumentNullException.ThrowIfNull(folder);
        if (!FimOrders.Contains(fimOrder))
            throw new ArgumentException($"fim order '{fimOrder}': expected {string.Join(" or ", FimOrders)}", nameof(fimOrder));
        var json = JsonSerializer.Serialize(new Dictionary<string, string> { [FimOrderKey] = fimOrder });
        File.WriteAllText(Path.Combine(folder, FileName), json + "\n");
    }
}
