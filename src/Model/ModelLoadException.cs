namespace InferenceServer.Model;

/// <summary>A model folder that cannot be used, with a message that names the problem.</summary>
public sealed class ModelLoadException : Exception
{
    public ModelLoadException(string message) : base(message) { }
    public ModelLoadException(string message, Exception inner) : base(message, inner) { }
}
