using System.Collections.Concurrent;
using System.Diagnostics;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace InferenceServer.LoadGenerator.Scenarios;

/// <summary>One file a manifest lists, relative to its root; with a SHA-256, the content it expects.</summary>
public sealed record ManifestFile(string Path, string? Sha256 = null);

/// <summary>
/// A list of real source files that prompts are cut from. The files themselves are not part of
/// the repository: the manifest names them relative to a root, which is a folder (relative to the
/// manifest) or "python-stdlib" for the running system's Python standard library.
/// </summary>
public sealed record SourceManifest
{
    /// <summary>The root that stands for this system's Python standard library.</summary>
    public const string PythonStdlib = "python-stdlib";

    public string? Description { get; init; }
    public required string Root { get; init; }
    public required IReadOnlyList<ManifestFile> Files { get; init; }

    public static SourceManifest Load(string path)
    {
        var json = File.ReadAllText(path);
        SourceManifest? manifest;
        try
        {
            manifest = JsonSerializer.Deserialize(json, ManifestJsonContext.Default.SourceManifest);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not a source manifest ({e.Message})", e);
        }
        if (manifest is null || manifest.Files.Count == 0)
            throw new InvalidDataException($"{path}: the manifest lists no files");
        if (manifest.Root == PythonStdlib || Path.IsPathRooted(manifest.Root))
            return manifest;
        // A relative root means relative to the manifest, so a manifest can sit beside its files.
        return manifest with { Root = Path.GetFullPath(Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, manifest.Root)) };
    }

    /// <summary>Every *.py file of this system's Python standard library (not site-packages), in name order.</summary>
    public static SourceManifest PythonStandardLibrary()
    {
        var root = FindPythonStdlib();
        var files = Directory.EnumerateFiles(root, "*.py", SearchOption.AllDirectories)
            .Select(f => Path.GetRelativePath(root, f).Replace('\\', '/'))
            .Where(f => !f.Contains("site-packages/", StringComparison.Ordinal) && !f.Contains("dist-packages/", StringComparison.Ordinal))
            .Order(StringComparer.Ordinal)
            .Select(f => new ManifestFile(f))
            .ToArray();
        if (files.Length == 0)
            throw new InvalidOperationException($"no *.py files under {root}; pass --manifest FILE");
        return new SourceManifest { Description = "the Python standard library of this system", Root = root, Files = files };
    }

    /// <summary>Asks python3 where its standard library is.</summary>
    public static string FindPythonStdlib()
    {
        const string Hint = "pass --manifest FILE (a JSON list of source files, see bench/InferenceServer.LoadGenerator/workloads)";
        var start = new ProcessStartInfo("python3") { RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add("-c");
        start.ArgumentList.Add("import sysconfig; print(sysconfig.get_paths()['stdlib'])");
        try
        {
            using var process = Process.Start(start) ?? throw new InvalidOperationException("python3 did not start");
            var output = process.StandardOutput.ReadToEnd().Trim();
            process.WaitForExit();
            if (process.ExitCode != 0 || !Directory.Exists(output))
                throw new InvalidOperationException($"python3 did not name its standard library folder; {Hint}");
            return output;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            throw new InvalidOperationException($"the default source text is the Python standard library, but python3 is not installed; {Hint}");
        }
    }

    /// <summary>The manifest's root as a folder on this system.</summary>
    public string ResolveRoot() => Root == PythonStdlib ? FindPythonStdlib() : Root;
}

/// <summary>A source file's text (line ends normalized to LF) and where its function bodies start.</summary>
public sealed class SourceDocument(string path, string text)
{
    private int[]? _bodyStarts;

    public string Path { get; } = path;
    public string Text { get; } = text;

    /// <summary>
    /// Where typing into each function body starts: after the indentation of the line that follows
    /// a "def ...:" line (the whole signature on one line), when it is indented deeper than the def,
    /// as an editor leaves the cursor after the line break.
    /// </summary>
    public IReadOnlyList<int> FunctionBodyStarts => _bodyStarts ??= FindBodyStarts(Text);

    private static int[] FindBodyStarts(string text)
    {
        var starts = new List<int>();
        var lineStart = 0;
        while (lineStart < text.Length)
        {
            var lineEnd = text.IndexOf('\n', lineStart);
            if (lineEnd < 0)
                break;
            var line = text.AsSpan(lineStart, lineEnd - lineStart);
            var indent = line.Length - line.TrimStart(' ').Length;
            var code = line.TrimStart(' ');
            if ((code.StartsWith("def ", StringComparison.Ordinal) || code.StartsWith("async def ", StringComparison.Ordinal)) && code.TrimEnd().EndsWith(':'))
            {
                var next = lineEnd + 1;
                var nextEnd = text.IndexOf('\n', next);
                if (nextEnd > next)
                {
                    var body = text.AsSpan(next, nextEnd - next);
                    var bodyIndent = body.Length - body.TrimStart(' ').Length;
                    if (bodyIndent > indent && !body.Trim().IsEmpty)
                        starts.Add(next + bodyIndent);
                }
            }
            lineStart = lineEnd + 1;
        }
        return [.. starts];
    }
}

/// <summary>The files of a manifest, read when first used; files that are missing or differ are noted for the report.</summary>
public sealed class SourceLibrary
{
    private readonly ConcurrentDictionary<int, SourceDocument?> _documents = new();
    private readonly ConcurrentDictionary<string, string> _problems = new(StringComparer.Ordinal);

    public SourceLibrary(SourceManifest manifest)
    {
        Manifest = manifest ?? throw new ArgumentNullException(nameof(manifest));
        Root = manifest.ResolveRoot();
        if (!Directory.Exists(Root))
            throw new DirectoryNotFoundException($"the manifest's root folder {Root} does not exist");
    }

    public SourceManifest Manifest { get; }
    public string Root { get; }
    public int Count => Manifest.Files.Count;

    /// <summary>Files that were missing or whose content differs from the manifest's SHA-256, with what was wrong.</summary>
    public IReadOnlyDictionary<string, string> Problems => _problems;

    /// <summary>The document at <paramref name="index"/>, or null when its file is missing.</summary>
    public SourceDocument? Document(int index) => _documents.GetOrAdd(index, Read);

    /// <summary>The first readable document at or after <paramref name="index"/> (wrapping around).</summary>
    public SourceDocument DocumentNear(int index, int minimumLength = 1)
    {
        for (var i = 0; i < Count; i++)
        {
            if (Document((index + i) % Count) is { } document && document.Text.Length >= minimumLength)
                return document;
        }
        throw new InvalidOperationException($"none of the {Count} files of the manifest under {Root} can be read or is at least {minimumLength} characters long");
    }

    private SourceDocument? Read(int index)
    {
        var file = Manifest.Files[index];
        var path = Path.Combine(Root, file.Path);
        if (!File.Exists(path))
        {
            _problems[file.Path] = "missing";
            return null;
        }
        var bytes = File.ReadAllBytes(path);
        if (file.Sha256 is { } expected && !string.Equals(Convert.ToHexStringLower(SHA256.HashData(bytes)), expected, StringComparison.OrdinalIgnoreCase))
            _problems[file.Path] = "content differs from the manifest's sha256";
        var text = System.Text.Encoding.UTF8.GetString(bytes).Replace("\r\n", "\n", StringComparison.Ordinal);
        return new SourceDocument(file.Path, text);
    }
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower, ReadCommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true)]
[JsonSerializable(typeof(SourceManifest))]
internal sealed partial class ManifestJsonContext : JsonSerializerContext;
