using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using InferenceServer.Tests;

namespace InferenceServer.Cli.Tests;

public sealed class CommandLineTests
{
    private static readonly string Tokenizer = TestPaths.Oracle("llama");

    [Fact]
    public void Help_lists_every_command()
    {
        var result = Cli.Run(null, "--help");
        Assert.Equal(0, result.ExitCode);
        foreach (var command in new[] { "serve", "generate", "build-model", "tokenize", "detokenize" })
            Assert.Contains(command, result.Output, StringComparison.Ordinal);
    }

    [Fact]
    public void Tokenize_reads_standard_input_exactly_and_detokenize_gives_it_back()
    {
        const string text = "def f(x):\n    return x  \n";
        var ids = Cli.Run(text, "tokenize", "--tokenizer", Tokenizer);
        Assert.Equal(0, ids.ExitCode);
        var parsed = JsonSerializer.Deserialize<int[]>(ids.Output)!;
        Assert.NotEmpty(parsed);

        var count = Cli.Run(text, "tokenize", "--tokenizer", Tokenizer, "--count");
        Assert.Equal(parsed.Length.ToString(System.Globalization.CultureInfo.InvariantCulture), count.Output.Trim());

        var back = Cli.Run(null, "detokenize", "--tokenizer", Tokenizer, "--ids", string.Join(",", parsed));
        Assert.Equal(0, back.ExitCode);
        Assert.Equal(text, back.Output);
    }

    [Fact]
    public void Jsonl_mode_handles_many_texts_in_one_process()
    {
        string[] texts = ["hello", "", "wörld\n\ttab", "\"quoted\""];
        var input = string.Join("\n", texts.Select(t => JsonSerializer.Serialize(t))) + "\n";
        var ids = Cli.Run(input, "tokenize", "--tokenizer", Tokenizer, "--jsonl");
        Assert.Equal(0, ids.ExitCode);
        var lines = ids.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(texts.Length, lines.Length);

        var decoded = Cli.Run(string.Join("\n", lines) + "\n", "detokenize", "--tokenizer", Tokenizer, "--jsonl");
        Assert.Equal(0, decoded.ExitCode);
        var back = decoded.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonSerializer.Deserialize<string>(l)).ToArray();
        Assert.Equal(texts, back);
    }

    [Theory]
    [InlineData("tokenize", "--tokenizer", "/nonexistent/tokenizer.json", "--text", "x")]
    [InlineData("detokenize", "--tokenizer", "TOKENIZER", "--ids", "1,two")]
    [InlineData("tokenize", "--tokenizer", "TOKENIZER", "--jsonl")]
    [InlineData("generate", "--model", "/nonexistent/model", "--prompt-ids", "1")]
    [InlineData("serve", "--device", "gpu")]
    [InlineData("serve", "--log-level", "loud")]
    [InlineData("serve", "--shutdown-grace-seconds", "-1")]
    [InlineData("serve", "--device", "cuda", "--model", "/nonexistent/model")]
    [InlineData("serve", "--adapter", "no-path")]
    [InlineData("serve", "--adapter", ":sql=/x")]
    [InlineData("serve", "--adapter", "elsewhere:sql=/nonexistent/adapter")]
    [InlineData("serve", "--model", "/nonexistent/one", "--model", "/nonexistent/two")]
    [InlineData("build-model", "--input", "TOKENIZER", "--random-config", "x.json", "--output", "/tmp/never")]
    [InlineData("build-model", "--lora-input", "/nonexistent/peft")]
    [InlineData("build-model", "--lora-input", "/nonexistent/peft", "--base", "/nonexistent/model")]
    [InlineData("build-model", "--input", "TOKENIZER", "--format", "hf", "--output", "/tmp/never")]
    [InlineData("build-model", "--input", "TOKENIZER", "--format", "gguf", "--precision", "int4", "--output", "/tmp/never.gguf")]
    [InlineData("build-model", "--input", "/nonexistent/hf", "--format", "gguf", "--output", "/tmp/never.gguf")]
    [InlineData("build-model", "--random-config", "x.json")]
    [InlineData("build-model", "--input", "TOKENIZER", "--fim-order", "middle-first", "--output", "/tmp/never")]
    [InlineData("build-model", "--input", "TOKENIZER", "--format", "gguf", "--fim-order", "suffix-prefix-middle", "--output", "/tmp/never.gguf")]
    [InlineData("build-model", "--upgrade-graph", "/nonexistent/model")]
    [InlineData("build-model", "--upgrade-graph", "/tmp", "--output", "/tmp/never")]
    public void Bad_input_gives_one_error_line_and_exit_code_1(params string[] arguments)
    {
        arguments = arguments.Select(a => a == "TOKENIZER" ? Tokenizer : a).ToArray();
        var result = Cli.Run(arguments.Contains("--jsonl") ? "not json\n" : null, arguments);
        Assert.NotEqual(0, result.ExitCode);
        Assert.DoesNotContain("   at ", result.Error, StringComparison.Ordinal); // no stack trace
        Assert.False(string.IsNullOrWhiteSpace(result.Error));
    }

    [Fact]
    public void The_fim_order_goes_to_serving_json_and_travels_from_a_hugging_face_folder()
    {
        using var temp = new TempFolder();
        var oracle = TestPaths.Oracle("llama");
        string? OrderIn(string folder) => InferenceServer.Model.ServingFile.ReadFimOrder(folder);

        var hf = temp.Combine("hf");
        Assert.Equal(0, Cli.Run(null, "build-model", "--random-config", Path.Combine(oracle, "config.json"), "--tokenizer", oracle,
            "--format", "hf", "--fim-order", "suffix-prefix-middle", "--output", hf).ExitCode);
        Assert.Equal("suffix-prefix-middle", OrderIn(hf));

        // Carried from the input folder, unless the command line says otherwise.
        var carried = temp.Combine("carried");
        Assert.Equal(0, Cli.Run(null, "build-model", "--input", hf, "--output", carried).ExitCode);
        Assert.Equal("suffix-prefix-middle", OrderIn(carried));
        var overridden = temp.Combine("overridden");
        Assert.Equal(0, Cli.Run(null, "build-model", "--input", hf, "--fim-order", "prefix-suffix-middle", "--output", overridden).ExitCode);
        Assert.Equal("prefix-suffix-middle", OrderIn(overridden));

        // A folder built without one has none: the server's default order.
        var plain = temp.Combine("plain");
        Assert.Equal(0, Cli.Run(null, "build-model", "--input", oracle, "--output", plain).ExitCode);
        Assert.False(File.Exists(Path.Combine(plain, InferenceServer.Model.ServingFile.FileName)));
    }

    [Fact]
    public async Task Build_model_then_generate_then_serve()
    {
        using var temp = new TempFolder();
        var model = temp.Combine("llama");
        var build = Cli.Run(null, "build-model", "--input", TestPaths.Oracle("llama"), "--output", model);
        Assert.Equal(0, build.ExitCode);
        Assert.True(File.Exists(Path.Combine(model, "model.onnx")));

        var generate = Cli.Run(null, "generate", "--model", model, "--prompt-ids", "1,129,83", "-n", "5", "--json");
        Assert.Equal(0, generate.ExitCode);
        using (var result = JsonDocument.Parse(generate.Output))
        {
            Assert.Equal(5, result.RootElement.GetProperty("token_ids").GetArrayLength());
            Assert.Equal("length", result.RootElement.GetProperty("finish_reason").GetString());
            Assert.Equal(3, result.RootElement.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        }

        // Text in, text out (the prompt from standard input), through the tokenizer.
        var text = Cli.Run("def f(x):", "generate", "--model", model, "-n", "4");
        Assert.Equal(0, text.ExitCode);
        Assert.False(string.IsNullOrEmpty(text.Output));

        var tooLong = Cli.Run(null, "generate", "--model", model, "--prompt-ids", "1,2", "-n", "100000");
        Assert.Equal(1, tooLong.ExitCode);
        Assert.Contains("context length", tooLong.Error, StringComparison.Ordinal);

        var port = Cli.FreePort();
        using var server = Cli.Start(["--model", model, "--http-port", port.ToString(System.Globalization.CultureInfo.InvariantCulture),
            "--grpc-port", Cli.FreePort().ToString(System.Globalization.CultureInfo.InvariantCulture), "--max-batch", "1"]);
        try
        {
            using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
            string? body = null;
            for (var attempt = 0; attempt < 100 && body is null && !server.HasExited; attempt++)
            {
                try
                {
                    body = await client.GetStringAsync(new Uri($"http://127.0.0.1:{port}/health"));
                }
                catch (HttpRequestException)
                {
                    await Task.Delay(200);
                }
            }
            Assert.NotNull(body);
            using var health = JsonDocument.Parse(body);
            Assert.Equal("ok", health.RootElement.GetProperty("status").GetString());

            // SIGTERM: a graceful stop and exit code 0.
            using (var kill = System.Diagnostics.Process.Start("kill", ["-TERM", server.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]))
                await kill.WaitForExitAsync();
            using var exited = new CancellationTokenSource(TimeSpan.FromSeconds(20));
            await server.WaitForExitAsync(exited.Token);
            Assert.Equal(0, server.ExitCode);
        }
        finally
        {
            if (!server.HasExited)
                server.Kill(entireProcessTree: true);
            server.WaitForExit();
        }
    }

    [Fact]
    public async Task Serve_reads_the_configuration_file_then_the_environment_then_the_command_line()
    {
        using var temp = new TempFolder();
        var model = temp.Combine("llama");
        Assert.Equal(0, Cli.Run(null, "build-model", "--input", TestPaths.Oracle("llama"), "--output", model).ExitCode);
        int filePort = Cli.FreePort(), grpcPort = Cli.FreePort(), commandLinePort = Cli.FreePort();
        await File.WriteAllTextAsync(temp.Combine("appsettings.json"), JsonSerializer.Serialize(new
        {
            InferenceServer = new { Model = model, HttpPort = filePort, GrpcPort = grpcPort, ApiKeys = new[] { "from-file" }, MaxBatch = 1 },
        }));

        using var server = Cli.Start(["--http-port", commandLinePort.ToString(System.Globalization.CultureInfo.InvariantCulture)],
            workingDirectory: temp.Path, environment: new Dictionary<string, string> { ["INFERENCESERVER_API_KEYS"] = "from-env, second" });
        try
        {
            using var client = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{commandLinePort}"), Timeout = TimeSpan.FromSeconds(5) };
            Assert.True(await Cli.WaitForHealthAsync(client, server), "the server did not answer on the command line's port");

            // The key from the environment replaces the file's list.
            Assert.Equal(HttpStatusCode.OK, await ModelsStatusAsync(client, "from-env"));
            Assert.Equal(HttpStatusCode.OK, await ModelsStatusAsync(client, "second"));
            Assert.Equal(HttpStatusCode.Unauthorized, await ModelsStatusAsync(client, "from-file"));
            // The gRPC port, named only in the file, is listening.
            using (var grpc = new TcpClient())
                await grpc.ConnectAsync(IPAddress.Loopback, grpcPort);
        }
        finally
        {
            if (!server.HasExited)
                server.Kill(entireProcessTree: true);
            await server.WaitForExitAsync();
        }
    }

    [Fact]
    public void A_bad_setting_names_where_it_came_from()
    {
        using var temp = new TempFolder();
        File.WriteAllText(temp.Combine("settings.json"), """{"InferenceServer": {"GrpcPort": "fifty"}}""");
        var fromFile = Cli.Run(null, "serve", "--config", temp.Combine("settings.json"));
        Assert.Equal(1, fromFile.ExitCode);
        Assert.Contains("InferenceServer:GrpcPort", fromFile.Error, StringComparison.Ordinal);

        var missing = Cli.Run(null, "--config", temp.Combine("absent.json"));
        Assert.Equal(1, missing.ExitCode);
        Assert.Contains("does not exist", missing.Error, StringComparison.Ordinal);

        using var process = Cli.Start(["serve"], redirectInput: true, environment: new Dictionary<string, string> { ["INFERENCESERVER_MAX_BATCH"] = "many" });
        process.StandardInput.Close();
        var error = process.StandardError.ReadToEnd();
        process.WaitForExit();
        Assert.Equal(1, process.ExitCode);
        Assert.Contains("INFERENCESERVER_MAX_BATCH", error, StringComparison.Ordinal);
    }

    private static async Task<HttpStatusCode> ModelsStatusAsync(HttpClient client, string key)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, "/v1/models");
        request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", key);
        using var response = await client.SendAsync(request);
        return response.StatusCode;
    }
}
