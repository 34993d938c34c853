using Microsoft.ML.OnnxRuntime;

namespace InferenceServer.Model;

/// <summary>An IO binding together with the OrtValues it was given, disposed with it.</summary>
internal sealed class StepBinding(OrtIoBinding ioBinding) : IDisposable
{
    private readonly List<OrtValue> _values = [];
    public OrtIoBinding IoBinding { get; } = ioBinding;

    public void Input(string name, OrtValue value)
    {
        _values.Add(value);
        IoBinding.BindInput(name, value);
    }

    public void Output(string name, OrtValue value)
    {
        if (!_values.Contains(value))
            _values.Add(value);
        IoBinding.BindOutput(name, value);
    }

    public void Dispose()
    {
        IoBinding.Dispose();
        foreach (var value in _values)
            value.Dispose();
    }
}
