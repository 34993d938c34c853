using System.Diagnostics;
using System.Text.Json;
using InferenceServer.Tests;

namespace InferenceServer.Server.Tests;

/// <summary>Clients written by others against our gRPC layer: Python's grpcio (C core).</summary>
[Collection(ServerCollection.Name)]
public sealed class ExternalGrpcClientTests(ServerFixture server)
{
    [PythonGrpcFact]
    public async Task Python_grpcio_calls_generate_stream_and_health()
    {
        using var temp = new TempFolder();
        var start = new ProcessStartInfo(PythonGrpcFactAttribute.Python) { RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add(Path.Combine(TestPaths.RepoRoot, "tests", "InferenceServer.Server.Tests", "clients", "grpcio_client.py"));
        start.ArgumentList.Add($"127.0.0.1:{server.Options.GrpcPort}");
        start.ArgumentList.Add(Path.Combine(TestPaths.RepoRoot, "src", "Protocol", "Protos"));
        start.ArgumentList.Add(temp.Path);
        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync().WaitAsync(TimeSpan.FromMinutes(2));
        Assert.True(process.ExitCode == 0, $"grpcio client failed: {await error}");

        using var result = JsonDocument.Parse(await output);
        var root = result.RootElement;
        var unary = root.GetProperty("unary");
        Assert.Equal(6, unary.GetProperty("token_ids").GetArrayLength());
        Assert.Equal("FINISH_REASON_LENGTH", unary.GetProperty("finish_reason").GetString());
        var stream = root.GetProperty("stream");
        Assert.Equal(unary.GetProperty("token_ids").ToString(), stream.GetProperty("token_ids").ToString());
        Assert.Equal(unary.GetProperty("text").GetString(), stream.GetProperty("text").GetString());
        Assert.Equal("FINISH_REASON_LENGTH", stream.GetProperty("finish_reason").GetString());
        Assert.Equal("SERVING", root.GetProperty("health").GetString());
        Assert.Equal("INVALID_ARGUMENT", root.GetProperty("error").GetProperty("code").GetString());
        await server.AssertEngineIdleAsync();
    }
}

/// <summary>
/// A test that needs Debian's python3-grpcio, python3-protobuf and protoc: .ci/run installs them;
/// on a machine without them the test is reported as skipped, with the reason.
/// </summary>
public sealed class PythonGrpcFactAttribute : FactAttribute
{
    // Debian's python3-grpcio installs for the system interpreter.
    public const string Python = "/usr/bin/python3";

    private static readonly Lazy<bool> Available = new(() =>
    {
        if (!File.Exists(Python))
            return false;
        try
        {
            using var check = Process.Start(new ProcessStartInfo("bash", ["-c", $"{Python} -c 'import grpc, google.protobuf' && command -v protoc"])
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            })!;
            check.WaitForExit(30_000);
            return check.HasExited && check.ExitCode == 0;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return false;
        }
    });

    public PythonGrpcFactAttribute()
    {
        if (!Available.Value)
            Skip = "needs python3-grpcio, python3-protobuf and protobuf-compiler (apt-get install them; .ci/run does)";
    }
}
