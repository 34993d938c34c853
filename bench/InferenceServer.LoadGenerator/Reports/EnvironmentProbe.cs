using System.Diagnostics;
using System.Runtime.InteropServices;

namespace InferenceServer.LoadGenerator.Reports;

/// <summary>Describes the machine a report is measured on.</summary>
public static class EnvironmentProbe
{
    public static EnvironmentInfo Describe(IEnumerable<string> arguments) => new()
    {
        CpuModel = CpuModel(),
        Cores = Environment.ProcessorCount,
        Gpu = Gpus(),
        Os = RuntimeInformation.OSDescription,
        Dotnet = RuntimeInformation.FrameworkDescription,
        GitCommit = GitCommit(),
        CommandLine = string.Join(' ', arguments),
    };

    private static string CpuModel()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/cpuinfo"))
            {
                if (line.StartsWith("model name", StringComparison.Ordinal) && line.IndexOf(':', StringComparison.Ordinal) is var colon and > 0)
                    return line[(colon + 1)..].Trim();
            }
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
        return RuntimeInformation.ProcessArchitecture.ToString();
    }

    /// <summary>The names of the NVIDIA GPUs (a report measured on CUDA must name its device); null without nvidia-smi.</summary>
    private static string? Gpus()
    {
        var names = Run("nvidia-smi", "--query-gpu=name", "--format=csv,noheader");
        return string.IsNullOrWhiteSpace(names) ? null : string.Join(", ", names.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
    }

    /// <summary>The short commit of the current folder's repository, "-dirty" when it has changes; null without git.</summary>
    private static string? GitCommit()
    {
        var commit = Git("rev-parse", "--short", "HEAD");
        if (commit is null)
            return null;
        var status = Git("status", "--porcelain", "--untracked-files=no");
        return string.IsNullOrWhiteSpace(status) ? commit : commit + "-dirty";
    }

    private static string? Git(params string[] arguments) => Run("git", arguments);

    /// <summary>A program's standard output when it exits with 0; null when it fails or is not there.</summary>
    private static string? Run(string program, params string[] arguments)
    {
        var start = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var argument in arguments)
            start.ArgumentList.Add(argument);
        try
        {
            using var process = Process.Start(start);
            if (process is null)
                return null;
            var output = process.StandardOutput.ReadToEnd();
            process.WaitForExit();
            return process.ExitCode == 0 ? output.Trim() : null;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return null;
        }
    }
}
