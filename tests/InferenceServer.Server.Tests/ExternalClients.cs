using System.Collections.Concurrent;
using System.Diagnostics;
using InferenceServer.Tests;

namespace InferenceServer.Server.Tests;

/// <summary>Clients written by others, run as separate programs against the live test servers.</summary>
internal static class ExternalClients
{
    public static readonly string Folder = Path.Combine(TestPaths.RepoRoot, "tests", "InferenceServer.Server.Tests", "clients");

    public static readonly string ProtoFolder = Path.Combine(TestPaths.RepoRoot, "src", "Protocol", "Protos");

    private static readonly ConcurrentDictionary<string, Lazy<string>> Installed = new(StringComparer.Ordinal);

    /// <summary>
    /// The folder holding node_modules/ for one npm client (clients/install-npm-client.sh NAME): the first
    /// install downloads a few small packages into the user's cache; later runs find them there.
    /// </summary>
    public static string NpmClient(string name) => Installed.GetOrAdd(name, n => new Lazy<string>(
        () => Run("bash", [Path.Combine(Folder, "install-npm-client.sh"), n], TimeSpan.FromMinutes(5)).Trim(),
        LazyThreadSafetyMode.ExecutionAndPublication)).Value;

    /// <summary>Runs a program to its end and returns its stdout; a failure or a timeout fails the test with its stderr.</summary>
    public static string Run(string program, IReadOnlyList<string> arguments, TimeSpan timeout)
    {
        var start = new ProcessStartInfo(program)
        {
            WorkingDirectory = TestPaths.RepoRoot,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var argument in arguments)
            start.ArgumentList.Add(argument);
        using var process = Process.Start(start) ?? throw new InvalidOperationException($"could not start {program}");
        // Both pipes drained at once: a full pipe would block the child.
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(timeout))
        {
            process.Kill(entireProcessTree: true);
            throw new InvalidOperationException($"{program} {string.Join(' ', arguments)} did not finish within {timeout}; stderr:\n{Drained(stderr)}");
        }
        process.WaitForExit();
        if (process.ExitCode != 0)
            throw new InvalidOperationException($"{program} {string.Join(' ', arguments)} failed with exit code {process.ExitCode}:\n{Drained(stderr)}\nstdout:\n{Drained(stdout)}");
        return stdout.Result;
    }

    private static string Drained(Task<string> reader) => reader.Wait(TimeSpan.FromSeconds(5)) ? reader.Result : "(nothing)";
}
