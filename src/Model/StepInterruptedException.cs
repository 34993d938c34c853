namespace InferenceServer.Model;

/// <summary>
/// A step that <see cref="IDecoderModel.Interrupt"/> ended before it finished: nothing it was to
/// return is there, and the KV positions it was writing hold nothing valid (the caller treats
/// them as never computed).
/// </summary>
public sealed class StepInterruptedException : Exception
{
    public StepInterruptedException()
        : base("the step was interrupted")
    {
    }

    public StepInterruptedException(string message)
        : base(message)
    {
    }

    public StepInterruptedException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
