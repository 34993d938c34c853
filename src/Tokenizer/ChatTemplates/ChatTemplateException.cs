namespace InferenceServer.Tokenizer.ChatTemplates;

/// <summary>A chat template that does not parse (at load) or that fails while rendering (raise_exception, a bad operation).</summary>
public sealed class ChatTemplateException : Exception
{
    public ChatTemplateException(string message) : base(message)
    {
    }

    public ChatTemplateException(string message, Exception inner) : base(message, inner)
    {
    }

    public ChatTemplateException()
    {
    }

    /// <summary>True when the template itself raised it (raise_exception): a message meant for the caller.</summary>
    public bool RaisedByTemplate { get; init; }
}
