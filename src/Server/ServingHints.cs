using System.Text.Json;
using InferenceServer.Model;
using InferenceServer.Tokenizer;

namespace InferenceServer.Server;

/// <summary>
/// Optional serving.json in a model folder: how the model wants to be prompted, which only
/// whoever trained it knows. Today one key: "fim_order", "prefix-suffix-middle" (the default)
/// or "suffix-prefix-middle" (for models trained with both orders; it keeps an editor's
/// consecutive prompts cacheable, since only their end changes).
/// </summary>
public static class ServingHints
{
    public const string FileName = "serving.json";

    public static FimOrder FimOrder(ModelFolder folder)
    {
        ArgumentNullException.ThrowIfNull(folder);
        var path = Path.Combine(folder.Path, FileName);
        if (!File.Exists(path))
            return Tokenizer.FimOrder.PrefixSuffixMiddle;
        try
        {
            using var document = JsonDocument.Parse(File.ReadAllBytes(path));
            if (!document.RootElement.TryGetProperty("fim_order", out var order))
                return Tokenizer.FimOrder.PrefixSuffixMiddle;
            return order.GetString() switch
            {
                "prefix-suffix-middle" => Tokenizer.FimOrder.PrefixSuffixMiddle,
                "suffix-prefix-middle" => Tokenizer.FimOrder.SuffixPrefixMiddle,
                var other => throw new ModelLoadException($"{path}: fim_order is '{other}'; expected prefix-suffix-middle or suffix-prefix-middle"),
            };
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException)
        {
            throw new ModelLoadException($"{path}: {e.Message}", e);
        }
    }
}
