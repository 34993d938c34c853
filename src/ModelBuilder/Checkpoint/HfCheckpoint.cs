namespace InferenceServer.ModelBuilder.Checkpoint;

/// <summary>
/// The weights of a Hugging Face model folder: every *.safetensors file in it (one file, or the
/// shards a model.safetensors.index.json lists). Names must be unique across shards.
/// </summary>
public sealed class HfCheckpoint : IWeightSource
{
    private readonly List<SafetensorsFile> _files = [];
    private readonly Dictionary<string, SafetensorsFile> _byName = new(StringComparer.Ordinal);

    public HfCheckpoint(string folder)
    {
        var paths = Directory.GetFiles(folder, "*.safetensors").Order(StringComparer.Ordinal).ToArray();
        if (paths.Length == 0)
            throw new ModelBuildException($"{folder}: no *.safetensors files");
        try
        {
            foreach (var path in paths)
            {
                var file = SafetensorsFile.Open(path);
                _files.Add(file);
                foreach (var name in file.Names)
                {
                    if (!_byName.TryAdd(name, file))
                        throw new ModelBuildException($"{folder}: tensor '{name}' is in both {System.IO.Path.GetFileName(_byName[name].Path)} and {System.IO.Path.GetFileName(path)}");
                }
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public bool Contains(string name) => _byName.ContainsKey(name);

    public float[] Read(string name, ReadOnlySpan<long> expectedShape) =>
        _byName.TryGetValue(name, out var file)
            ? file.Read(name, expectedShape)
            : throw new ModelBuildException($"the checkpoint has no tensor '{name}'");

    public void Dispose()
    {
        foreach (var file in _files)
            file.Dispose();
        _files.Clear();
    }
}
