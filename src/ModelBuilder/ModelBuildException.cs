namespace InferenceServer.ModelBuilder;

/// <summary>An input the model builder cannot convert, with a message that names the problem.</summary>
public sealed class ModelBuildException : Exception
{
    public ModelBuildException(string message) : base(message) { }
    public ModelBuildException(string message, Exception inner) : base(message, inner) { }
}
