using System.Diagnostics;

namespace InferenceServer.Tests;

/// <summary>Runs a bash script under tests/fixtures from the repository root and returns its stdout.</summary>
internal static class FixtureScripts
{
    /// <summary>
    /// stdout of <paramref name="script"/> with <paramref name="arguments"/>; a non-zero exit or a run past
    /// <paramref name="timeout"/> throws with the script's stderr in the message.
    /// </summary>
    public static string Run(string script, IEnumerable<string> arguments, TimeSpan timeout)
    {
        var start = new ProcessStartInfo("bash")
        {
            WorkingDirectory = TestPaths.RepoRoot,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(script);
        foreach (var argument in arguments)
            start.ArgumentList.Add(argument);

        using var process = Process.Start(start) ?? throw new InvalidOperationException("could not start bash for " + script);
        // Both pipes drained at once: npm can write a lot to stderr, and a full pipe would block the script.
        var stderr = process.StandardError.ReadToEndAsync();
        var stdout = process.StandardOutput.ReadToEndAsync();
        if (!process.WaitForExit(timeout))
        {
            process.Kill(entireProcessTree: true);
            throw new InvalidOperationException($"{script} did not finish within {timeout}; its stderr so far:\n{Drained(stderr)}");
        }
        process.WaitForExit(); // lets the pipe readers reach the end of output
        if (process.ExitCode != 0)
            throw new InvalidOperationException($"{script} failed with exit code {process.ExitCode}:\n{Drained(stderr)}");
        return stdout.Result;
    }

    public static string Drained(Task<string> reader) => reader.Wait(TimeSpan.FromSeconds(5)) ? reader.Result : "(no stderr)";
}
