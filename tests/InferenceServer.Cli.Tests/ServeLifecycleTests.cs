using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using InferenceServer.Tests;

namespace InferenceServer.Cli.Tests;

/// <summary>The serve process starting and stopping: a busy port, SIGTERM with a call in flight, logging.</summary>
public sealed class ServeLifecycleTests
{
    private static string Port(int port) => port.ToString(CultureInfo.InvariantCulture);

    [Fact]
    public async Task A_busy_port_is_one_line_and_a_nonzero_exit()
    {
        using var temp = new TempFolder();
        var model = temp.Combine("llama");
        Assert.Equal(0, Cli.Run(null, "build-model", "--input", TestPaths.Oracle("llama"), "--output", model).ExitCode);
        using var taken = new TcpListener(IPAddress.Loopback, 0);
        taken.Start();
        var busy = ((IPEndPoint)taken.LocalEndpoint).Port;

        var result = await Task.Run(() => Cli.Run(null, "--model", model, "--http-port", Port(busy), "--grpc-port", Port(Cli.FreePort())));
        Assert.NotEqual(0, result.ExitCode);
        Assert.Equal($"error: port {busy} is already in use (HTTP); choose another with --http-port", result.Error.Trim());
        Assert.DoesNotContain("   at ", result.Output, StringComparison.Ordinal);

        var grpc = await Task.Run(() => Cli.Run(null, "--model", model, "--http-port", Port(Cli.FreePort()), "--grpc-port", Port(busy)));
        Assert.NotEqual(0, grpc.ExitCode);
        Assert.Equal($"error: port {busy} is already in use (gRPC); choose another with --grpc-port", grpc.Error.Trim());
    }

    [Fact]
    public async Task Sigterm_drains_while_listening_then_ends_the_call_still_running_with_a_503_and_exits()
    {
        using var temp = new TempFolder();
        var model = temp.Combine("llama");
        Assert.Equal(0, Cli.Run(null, "build-model", "--input", TestPaths.Oracle("llama"), "--output", model).ExitCode);
        var port = Cli.FreePort();
        using var server = Cli.Start(["--model", model, "--http-port", Port(port), "--grpc-port", Port(Cli.FreePort()),
            "--max-batch", "1", "--shutdown-grace-seconds", "2"]);
        var output = server.StandardOutput.ReadToEndAsync();
        try
        {
            using var client = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}"), Timeout = TimeSpan.FromSeconds(10) };
            Assert.True(await Cli.WaitForHealthAsync(client, server), "the server did not start");

            // A call in flight that cannot finish by itself: its body never completes.
            using var stalled = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await stalled.ConnectAsync(IPAddress.Loopback, port);
            await stalled.SendAsync(Encoding.ASCII.GetBytes(
                "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"prompt\":"));
            // Time for the server to take the call into its pipeline (where it is counted as in
            // flight); nothing outside the process shows that moment. 200 ms proved too short
            // beside the other tests' model builds on 2 cores.
            await Task.Delay(1000);

            using (var kill = System.Diagnostics.Process.Start("kill", ["-TERM", server.Id.ToString(CultureInfo.InvariantCulture)]))
                await kill.WaitForExitAsync();

            // Still listening, draining: health says so and new calls get 503 (until the stalled call is ended).
            var health = await GetDuringDrainAsync(client, "/health");
            for (var attempt = 0; attempt < 30 && health.Status == HttpStatusCode.OK; attempt++)
            {
                await Task.Delay(50); // the signal is handled on another thread
                health = await GetDuringDrainAsync(client, "/health");
            }
            Assert.Equal(HttpStatusCode.ServiceUnavailable, health.Status);
            Assert.Contains("\"draining\"", health.Body, StringComparison.Ordinal);
            var models = await GetDuringDrainAsync(client, "/v1/models");
            Assert.Equal(HttpStatusCode.ServiceUnavailable, models.Status);

            // When the grace period is over, the stalled call gets a 503 with an error body, not a reset.
            var answer = await ReceiveAnswerAsync(stalled);
            Assert.StartsWith("HTTP/1.1 503 ", answer, StringComparison.Ordinal);
            Assert.Contains("\"code\":\"service_unavailable\"", answer, StringComparison.Ordinal);
            stalled.Close();

            using var exited = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            await server.WaitForExitAsync(exited.Token);
            Assert.Equal(0, server.ExitCode);
            var log = await output;
            Assert.Contains("shutting down: 1 calls in flight get 2 s to finish", log, StringComparison.Ordinal);
            Assert.Contains("HTTP GET /health 503 ", log, StringComparison.Ordinal);
            Assert.Contains("HTTP POST /v1/completions 503 ", log, StringComparison.Ordinal);
        }
        finally
        {
            if (!server.HasExited)
                server.Kill(entireProcessTree: true);
            await server.WaitForExitAsync();
        }
    }

    private static async Task<(HttpStatusCode Status, string Body)> GetDuringDrainAsync(HttpClient client, string path)
    {
        // Connection: close, so no connection is kept that the shutdown would have to close under us.
        using var request = new HttpRequestMessage(HttpMethod.Get, new Uri(path, UriKind.Relative));
        request.Headers.ConnectionClose = true;
        using var response = await client.SendAsync(request);
        return (response.StatusCode, await response.Content.ReadAsStringAsync());
    }

    private static async Task<string> ReceiveAnswerAsync(Socket socket)
    {
        var received = new StringBuilder();
        var buffer = new byte[4096];
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        int n;
        while ((n = await socket.ReceiveAsync(buffer, timeout.Token)) > 0)
        {
            received.Append(Encoding.ASCII.GetString(buffer, 0, n));
            if (received.ToString().EndsWith("\r\n0\r\n\r\n", StringComparison.Ordinal))
                break;
        }
        return received.ToString();
    }
}
