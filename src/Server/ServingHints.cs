using InferenceServer.Model;
using InferenceServer.Tokenizer;

namespace InferenceServer.Server;

/// <summary>
/// What the optional serving.json of a model folder (<see cref="ServingFile"/>) asks of the
/// server. Today one key: "fim_order", "prefix-suffix-middle" (the default) or
/// "suffix-prefix-middle" (for models trained with both orders; it keeps an editor's
/// consecutive prompts cacheable, since only their end changes).
/// </summary>
public static class ServingHints
{
    public const string FileName = ServingFile.FileName;

    public static FimOrder FimOrder(ModelFolder folder)
    {
        ArgumentNullException.ThrowIfNull(folder);
        return ServingFile.ReadFimOrder(folder.Path) == ServingFile.SuffixPrefixMiddle
            ? Tokenizer.FimOrder.SuffixPrefixMiddle
            : Tokenizer.FimOrder.PrefixSuffixMiddle;
    }
}
