using System.Text.Json;

namespace InferenceServer.ModelBuilder.Checkpoint;

/// <summary>
/// The weights of a Hugging Face model folder: the shards that model.safetensors.index.json
/// lists when there is one, otherwise every *.safetensors file. Names must be unique across shards.
/// </summary>
public sealed class HfCheckpoint : IWeightSource
{
    private readonly List<SafetensorsFile> _files = [];
    private readonly Dictionary<string, SafetensorsFile> _byName = new(StringComparer.Ordinal);

    public HfCheckpoint(string folder)
    {
        var paths = ShardPaths(folder);
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

    private static string[] ShardPaths(string folder)
    {
        var index = Path.Combine(folder, "model.safetensors.index.json");
        if (!File.Exists(index))
        {
            var all = Directory.GetFiles(folder, "*.safetensors").Order(StringComparer.Ordinal).ToArray();
            return all.Length > 0 ? all : throw new ModelBuildException($"{folder}: no *.safetensors files");
        }
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(index));
            var shards = doc.RootElement.GetProperty("weight_map").EnumerateObject()
                .Select(entry => entry.Value.GetString() ?? "")
                .Distinct(StringComparer.Ordinal)
                .Order(StringComparer.Ordinal)
                .Select(name => Path.Combine(folder, name))
                .ToArray();
            foreach (var shard in shards)
            {
                if (!File.Exists(shard))
                    throw new ModelBuildException($"{index}: lists shard '{Path.GetFileName(shard)}', which is missing");
            }
            return shards.Length > 0 ? shards : throw new ModelBuildException($"{index}: the weight map is empty");
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
        {
            throw new ModelBuildException($"{index}: not a valid index ({e.Message})", e);
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
