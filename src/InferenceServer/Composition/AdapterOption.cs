namespace InferenceServer.Composition;

/// <summary>serve --adapter [MODEL:]NAME=PATH: an adapter folder (as build-model --lora-input writes it) served as NAME on MODEL (empty: the first model).</summary>
public sealed record AdapterOption(string Model, string Name, string Path)
{
    /// <summary>Reads [MODEL:]NAME=PATH; a malformed one is an <see cref="ArgumentException"/> that shows the form.</summary>
    public static AdapterOption Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var equals = text.IndexOf('=', StringComparison.Ordinal);
        if (equals <= 0 || equals == text.Length - 1)
            throw new ArgumentException($"adapter '{text}' is not NAME=PATH or MODEL:NAME=PATH");
        var key = text[..equals];
        var colon = key.IndexOf(':', StringComparison.Ordinal);
        var (model, name) = colon < 0 ? ("", key) : (key[..colon], key[(colon + 1)..]);
        if (name.Length == 0 || (colon >= 0 && model.Length == 0))
            throw new ArgumentException($"adapter '{text}' is not NAME=PATH or MODEL:NAME=PATH");
        return new AdapterOption(model, name, text[(equals + 1)..]);
    }
}
