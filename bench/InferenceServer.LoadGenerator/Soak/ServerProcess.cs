using System.Diagnostics;
using System.Globalization;

namespace InferenceServer.LoadGenerator.Soak;

/// <summary>
/// The real server as its own process on free loopback ports, so its memory can be read from
/// /proc apart from the load generator's. Its output goes to a log file beside the soak's report.
/// </summary>
public sealed class ServerProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly StreamWriter _log;
    private readonly Lock _logLock = new();

    private ServerProcess(Process process, StreamWriter log, int httpPort, int grpcPort)
    {
        _process = process;
        _log = log;
        HttpAddress = new Uri($"http://127.0.0.1:{httpPort}");
        GrpcAddress = new Uri($"http://127.0.0.1:{grpcPort}");
    }

    public int Pid => _process.Id;
    public Uri HttpAddress { get; }
    public Uri GrpcAddress { get; }

    /// <summary>Starts <paramref name="program"/> serve and waits until GET /health answers 200.</summary>
    public static async Task<ServerProcess> StartAsync(string program, string model, IReadOnlyList<string> extraArguments, string logPath,
        ServerProbe probe, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(program);
        ArgumentNullException.ThrowIfNull(extraArguments);
        ArgumentNullException.ThrowIfNull(probe);
        if (!File.Exists(program))
            throw new ArgumentException($"--server '{program}' does not exist (build it: dotnet build -c Release src/InferenceServer)");
        int httpPort = EmbeddedServer.FreePort(), grpcPort = EmbeddedServer.FreePort();
        // A framework-dependent .dll runs through dotnet; anything else is run as it is.
        var isDll = program.EndsWith(".dll", StringComparison.OrdinalIgnoreCase);
        var info = new ProcessStartInfo(isDll ? "dotnet" : program)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        if (isDll)
            info.ArgumentList.Add(program);
        foreach (var argument in (string[])["serve", "--model", model, "--host", "127.0.0.1",
            "--http-port", httpPort.ToString(CultureInfo.InvariantCulture), "--grpc-port", grpcPort.ToString(CultureInfo.InvariantCulture)])
        {
            info.ArgumentList.Add(argument);
        }
        foreach (var argument in extraArguments)
            info.ArgumentList.Add(argument);

        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(logPath))!);
        var log = new StreamWriter(logPath) { AutoFlush = true };
        var process = new Process { StartInfo = info };
        var server = new ServerProcess(process, log, httpPort, grpcPort);
        process.OutputDataReceived += (_, e) => server.Log(e.Data);
        process.ErrorDataReceived += (_, e) => server.Log(e.Data);
        try
        {
            process.Start();
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            await server.WaitReadyAsync(probe, logPath, cancellationToken).ConfigureAwait(false);
            return server;
        }
        catch
        {
            await server.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    private async Task WaitReadyAsync(ServerProbe probe, string logPath, CancellationToken cancellationToken)
    {
        // Loading the model and ONNX Runtime takes seconds on a small machine; a build that fails to start exits.
        var deadline = Stopwatch.StartNew();
        while (deadline.Elapsed < TimeSpan.FromMinutes(3))
        {
            if (_process.HasExited)
                throw new InvalidOperationException($"the server exited with code {_process.ExitCode} before it served (its output: {logPath})");
            if (await probe.HealthyAsync(HttpAddress, cancellationToken).ConfigureAwait(false))
                return;
            await Task.Delay(200, cancellationToken).ConfigureAwait(false);
        }
        throw new InvalidOperationException($"the server did not answer GET /health within 3 minutes (its output: {logPath})");
    }

    private void Log(string? line)
    {
        if (line is null)
            return;
        lock (_logLock)
            _log.WriteLine(line);
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
                await _process.WaitForExitAsync().ConfigureAwait(false);
            }
        }
        catch (InvalidOperationException)
        {
            // Never started: nothing to stop.
        }
        _process.Dispose();
        lock (_logLock)
            _log.Dispose();
    }
}

/// <summary>The resident memory of a process, from /proc/PID/status.</summary>
public static class ProcessMemory
{
    /// <summary>VmRSS in kB; null when the process is gone or /proc cannot be read.</summary>
    public static long? ResidentKilobytes(int pid)
    {
        try
        {
            foreach (var line in File.ReadLines($"/proc/{pid.ToString(CultureInfo.InvariantCulture)}/status"))
            {
                if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                    return ParseKilobytes(line);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
        return null;
    }

    /// <summary>"VmRSS:	  123456 kB" as 123456.</summary>
    public static long? ParseKilobytes(string line)
    {
        ArgumentNullException.ThrowIfNull(line);
        var parts = line.Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries);
        return parts.Length >= 2 && long.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var kb) ? kb : null;
    }
}
