using System.CommandLine;
using System.Net;
using InferenceServer.Model;

namespace InferenceServer.Commands;

/// <summary>
/// serve: loads the model and answers on HTTP, bound to loopback by default. The model is
/// loaded (and its session created) before the port opens, so a running server is a ready one.
/// </summary>
internal static class ServeCommand
{
    private static readonly Option<string> Model = ModelOption.Create();
    private static readonly Option<string> Host = new("--host") { Description = "Address to bind.", DefaultValueFactory = _ => "127.0.0.1" };
    private static readonly Option<int> HttpPort = new("--http-port") { Description = "HTTP port.", DefaultValueFactory = _ => 8080 };
    private static readonly Option<int> MaxBatch = new("--max-batch") { Description = "KV slots: sequences served at once.", DefaultValueFactory = _ => 8 };
    private static readonly Option<int> Threads = new("--threads") { Description = "ONNX Runtime intra-op threads (0: one per core)." };

    public static Command Create()
    {
        var command = new Command("serve", "Serve a model (the default command).") { Model, Host, HttpPort, MaxBatch, Threads };
        command.SetAction(RunAsync);
        return command;
    }

    public static async Task<int> RunAsync(ParseResult parseResult, CancellationToken cancellationToken)
    {
        DecoderRunner runner;
        try
        {
            var folder = ModelFolder.Load(parseResult.GetValue(Model)!);
            runner = new DecoderRunner(folder, new RunnerOptions
            {
                MaxBatch = parseResult.GetValue(MaxBatch),
                IntraOpThreads = parseResult.GetValue(Threads),
            });
        }
        catch (ModelLoadException e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            Console.Error.WriteLine("Pass --model DIR, or build a model folder with 'build-model'.");
            return 1;
        }
        using (runner)
        {
            if (!IPAddress.TryParse(parseResult.GetValue(Host), out var address))
            {
                Console.Error.WriteLine($"error: --host '{parseResult.GetValue(Host)}' is not an IP address");
                return 1;
            }
            var builder = WebApplication.CreateSlimBuilder();
            builder.Logging.SetMinimumLevel(LogLevel.Warning);
            builder.WebHost.ConfigureKestrel(k => k.Listen(address, parseResult.GetValue(HttpPort)));
            var app = builder.Build();
            var modelName = Path.GetFileName(runner.Folder.Path);
            app.MapGet("/health", () => Results.Json(new HealthResponse("ok", modelName), ServeJsonContext.Default.HealthResponse));
            await app.StartAsync(cancellationToken);
            Console.WriteLine($"serving {runner.Folder.Path} on http://{address}:{parseResult.GetValue(HttpPort)} ({runner.Slots} slots x {runner.Capacity} tokens, KV {runner.KvCacheBytes / (1 << 20)} MiB)");
            await app.WaitForShutdownAsync(cancellationToken);
        }
        return 0;
    }
}

internal sealed record HealthResponse(string Status, string Model);

[System.Text.Json.Serialization.JsonSourceGenerationOptions(PropertyNamingPolicy = System.Text.Json.Serialization.JsonKnownNamingPolicy.SnakeCaseLower)]
[System.Text.Json.Serialization.JsonSerializable(typeof(HealthResponse))]
internal sealed partial class ServeJsonContext : System.Text.Json.Serialization.JsonSerializerContext;
