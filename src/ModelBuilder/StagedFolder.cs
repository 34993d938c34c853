namespace InferenceServer.ModelBuilder;

/// <summary>
/// Writes an output folder into a temporary folder beside the target and moves it into place at
/// the end, so a failed build leaves nothing half-written.
/// </summary>
internal static class StagedFolder
{
    public static void Write(string outputFolder, bool overwrite, Action<string> fill)
    {
        var target = Path.GetFullPath(outputFolder);
        if (Directory.Exists(target) && !overwrite)
            throw new ModelBuildException($"{target} already exists (pass overwrite to replace it)");
        var parent = Path.GetDirectoryName(target) ?? throw new ModelBuildException($"{target}: no parent folder");
        Directory.CreateDirectory(parent);
        var staging = Path.Combine(parent, $".{Path.GetFileName(target)}.partial-{Guid.NewGuid():N}");
        Directory.CreateDirectory(staging);
        try
        {
            fill(staging);
            Replace(staging, target);
        }
        catch
        {
            if (Directory.Exists(staging))
                Directory.Delete(staging, recursive: true);
            throw;
        }
    }

    /// <summary>Writes one file through a temporary file beside it, renamed into place when complete.</summary>
    public static void WriteFile(string outputFile, bool overwrite, Action<Stream> fill)
    {
        var target = Path.GetFullPath(outputFile);
        if (File.Exists(target) && !overwrite)
            throw new ModelBuildException($"{target} already exists (pass overwrite to replace it)");
        var parent = Path.GetDirectoryName(target) ?? throw new ModelBuildException($"{target}: no parent folder");
        Directory.CreateDirectory(parent);
        var staging = Path.Combine(parent, $".{Path.GetFileName(target)}.partial-{Guid.NewGuid():N}");
        try
        {
            using (var stream = new FileStream(staging, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
                fill(stream);
            File.Move(staging, target, overwrite: true);
        }
        catch
        {
            File.Delete(staging);
            throw;
        }
    }

    // An existing folder is first moved aside and only deleted once the new one is in place, so a
    // failure at any point keeps one complete folder.
    private static void Replace(string staging, string target)
    {
        if (!Directory.Exists(target))
        {
            Directory.Move(staging, target);
            return;
        }
        var previous = $"{staging}.previous";
        Directory.Move(target, previous);
        try
        {
            Directory.Move(staging, target);
        }
        catch
        {
            Directory.Move(previous, target);
            throw;
        }
        Directory.Delete(previous, recursive: true);
    }
}
