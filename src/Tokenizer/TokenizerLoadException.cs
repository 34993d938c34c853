namespace InferenceServer.Tokenizer;

/// <summary>A tokenizer.json that cannot be used, with a message that names the problem.</summary>
public sealed class TokenizerLoadException : Exception
{
    public TokenizerLoadException(string message) : base(message) { }
    public TokenizerLoadException(string message, Exception inner) : base(message, inner) { }
}
