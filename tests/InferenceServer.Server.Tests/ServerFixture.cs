using System.Net;
using System.Net.Sockets;
using System.Text;
using InferenceServer.Composition;
using InferenceServer.Engine;
using InferenceServer.ModelBuilder;
using InferenceServer.Tests;
using Microsoft.AspNetCore.Builder;

namespace InferenceServer.Server.Tests;

/// <summary>
/// A real server on loopback (both ports) serving a small random-weight Llama whose byte-level
/// tokenizer has StarCoder-style fill-in-the-middle tokens and an end-of-text token.
/// </summary>
public sealed class ServerFixture : IAsyncLifetime
{
    private readonly TempFolder _temp = new();
    private WebApplication? _app;

    public ServedModel Model { get; private set; } = null!;
    public ServerState State { get; } = new();
    public ServerOptions Options { get; private set; } = null!;
    public Uri HttpAddress => new($"http://127.0.0.1:{Options.HttpPort}");
    public Uri GrpcAddress => new($"http://127.0.0.1:{Options.GrpcPort}");

    /// <summary>Token ids of the special tokens, after the 256 byte tokens.</summary>
    public const int EndOfText = 256, FimPrefix = 257, FimSuffix = 258, FimMiddle = 259, FimPad = 260;
    public const int VocabSize = 261;

    public async Task InitializeAsync()
    {
        var tokenizerFolder = _temp.Combine("tokenizer");
        Directory.CreateDirectory(tokenizerFolder);
        await File.WriteAllTextAsync(Path.Combine(tokenizerFolder, "tokenizer.json"), TokenizerJson());
        await File.WriteAllTextAsync(Path.Combine(tokenizerFolder, "tokenizer_config.json"), TokenizerConfigJson);
        var config = new HfConfig
        {
            Architecture = "LlamaForCausalLM",
            HiddenSize = 64,
            IntermediateSize = 128,
            NumAttentionHeads = 4,
            NumKeyValueHeads = 2,
            NumHiddenLayers = 2,
            VocabSize = VocabSize,
            HeadDim = 16,
            MaxPositionEmbeddings = 512,
            EosTokenIds = [EndOfText],
        };
        var modelPath = _temp.Combine("tiny-coder");
        using (var weights = new ModelBuilder.Checkpoint.RandomWeights(seed: 3, standardDeviation: 0.1f))
            DecoderModelBuilder.Build(config, weights, modelPath, new BuildOptions(), tokenizerFolder);

        // Warnings and errors only on the console: the request lines of every test would bury them.
        Options = new ServerOptions
        {
            HttpPort = FreePort(), GrpcPort = FreePort(), MaxRequestBodyBytes = 1 << 20, MaxMessageBytes = 1 << 20,
            LogLevel = Microsoft.Extensions.Logging.LogLevel.Warning,
        };
        Model = CompositionRoot.LoadModel(modelPath, maxBatch: 8, contextLength: 512, intraOpThreads: 1, new EngineOptions { MaxWaitingRequests = 64 });
        _app = ServerHost.Build(Options, Model, State);
        await _app.StartAsync();
        State.State = ServingState.Serving;
    }

    public async Task DisposeAsync()
    {
        if (_app is not null)
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
        }
        await Model.DisposeAsync();
        _temp.Dispose();
    }

    /// <summary>Waits until the engine holds no running or waiting sequence and no KV block.</summary>
    public Task AssertEngineIdleAsync() => AssertIdleAsync(Model.Engine);

    /// <summary>Waits (up to 3 s) until <paramref name="engine"/> holds no running or waiting sequence and no KV block.</summary>
    public static async Task AssertIdleAsync(IInferenceEngine engine)
    {
        for (var i = 0; i < 300; i++)
        {
            var s = engine.Snapshot;
            if (s.Running == 0 && s.Waiting == 0 && s.UsedBlocks == 0)
                return;
            await Task.Delay(10);
        }
        Assert.Fail($"the engine did not return to idle: {engine.Snapshot}");
    }

    /// <summary>
    /// A ChatML-like chat template that ends each message with the eos token (&lt;|endoftext|&gt;, a special token),
    /// so the rendered prompt holds a control token written as text.
    /// </summary>
    public const string ChatTemplate =
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}{{ eos_token }}\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

    internal static readonly string TokenizerConfigJson = System.Text.Json.JsonSerializer.Serialize(new Dictionary<string, string>
    {
        ["chat_template"] = ChatTemplate,
        ["bos_token"] = "<|endoftext|>",
        ["eos_token"] = "<|endoftext|>",
    });

    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    // A byte-level vocabulary: the 256 byte tokens, then the special tokens; no merges.
    internal static string TokenizerJson()
    {
        var json = new StringBuilder("{\"model\": {\"type\": \"BPE\", \"vocab\": {");
        for (var b = 0; b < 256; b++)
        {
            var c = Tokenizer.Model.ByteLevelAlphabet.ByteToChar((byte)b);
            json.Append('"').Append(c switch { '"' => "\\\"", '\\' => "\\\\", _ => c.ToString() }).Append("\": ").Append(b).Append(", ");
        }
        json.Append("\"<|endoftext|>\": 256, \"<fim_prefix>\": 257, \"<fim_suffix>\": 258, \"<fim_middle>\": 259, \"<fim_pad>\": 260}, \"merges\": []}, ");
        json.Append("\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false}, \"decoder\": {\"type\": \"ByteLevel\"}, \"added_tokens\": [");
        string[] specials = ["<|endoftext|>", "<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<fim_pad>"];
        json.Append(string.Join(", ", specials.Select((t, i) => $"{{\"id\": {256 + i}, \"content\": \"{t}\", \"special\": true, \"normalized\": false}}")));
        json.Append("]}");
        return json.ToString();
    }
}

[CollectionDefinition(Name)]
public sealed class ServerCollection : ICollectionFixture<ServerFixture>
{
    public const string Name = "server";
}
