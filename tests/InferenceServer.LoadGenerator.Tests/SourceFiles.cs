using System.Text;
using InferenceServer.LoadGenerator.Scenarios;
using InferenceServer.Tests;

namespace InferenceServer.LoadGenerator.Tests;

/// <summary>Small Python-like source files written to a temp folder, with a manifest over them: no dependency on the system's Python.</summary>
internal sealed class SourceFiles : IDisposable
{
    private readonly TempFolder _temp = new();

    public SourceFiles(int files = 3)
    {
        var manifest = new StringBuilder("{\"root\": \"src\", \"files\": [");
        for (var f = 0; f < files; f++)
        {
            var path = Path.Combine(_temp.Path, "src", $"module{f}.py");
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            File.WriteAllText(path, Module(f));
            manifest.Append(f > 0 ? ", " : "").Append($"{{\"path\": \"module{f}.py\"}}");
        }
        manifest.Append("]}");
        ManifestPath = Path.Combine(_temp.Path, "manifest.json");
        File.WriteAllText(ManifestPath, manifest.ToString());
        Library = new SourceLibrary(SourceManifest.Load(ManifestPath));
    }

    public string ManifestPath { get; }
    public SourceLibrary Library { get; }

    private static string Module(int index)
    {
        var text = new StringBuilder($"\"\"\"Module {index}: arithmetic helpers.\"\"\"\nimport math\n\n\n");
        for (var i = 0; i < 12; i++)
        {
            text.Append($"def helper_{index}_{i}(values, scale={i + 1}):\n");
            text.Append("    total = 0\n");
            text.Append("    for value in values:\n");
            text.Append($"        if value > {i}:\n");
            text.Append("            total += math.floor(value * scale)\n");
            text.Append("        else:\n");
            text.Append("            total -= value\n");
            text.Append("    return total\n\n\n");
        }
        text.Append($"class Accumulator{index}:\n    def __init__(self):\n        self.items = []\n\n    def add(self, item):\n        self.items.append(item)\n        return len(self.items)\n");
        return text.ToString();
    }

    public void Dispose() => _temp.Dispose();
}
