namespace InferenceServer.Server.Tests;

/// <summary>A corpus being built: cases by name, names unique.</summary>
internal sealed class CaseTable<T>(Func<T, string> nameOf)
{
    public Dictionary<string, T> Cases { get; } = new(StringComparer.Ordinal);

    public void Add(T c)
    {
        var name = nameOf(c);
        Assert.True(Cases.TryAdd(name, c), $"two corpus cases are named '{name}'");
    }
}
