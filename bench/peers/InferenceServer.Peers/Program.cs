using System.Text.Json;
using InferenceServer.LoadGenerator.Scenarios;
using InferenceServer.Peers;

// inference-peers: the .NET side of bench/peers (see its README.md).
const string Usage = """
    usage:
      inference-peers prompts --tokenizer DIR --manifest FILE --prompt-tokens N --output-tokens N --levels 1,4,16 --requests N --seed N --out FILE
      inference-peers genai --model DIR --prompts FILE --threads N [--context-length 512] --out FILE
      inference-peers steps --model DIR [--threads 2] [--context-length 512] [--prompt-tokens 256] [--steps 64] [--rounds 10]
      inference-peers report --raw DIR --out DIR --title TEXT [--notes FILE]
    """;
try
{
    if (args.Length == 0)
        throw new UsageException("no command");
    var options = new Arguments(args.Skip(1));
    switch (args[0])
    {
        case "prompts":
            var tokenizerPath = options.Text("--tokenizer");
            var tokenizer = InferenceServer.Tokenizer.Tokenizer.Load(Directory.Exists(tokenizerPath) ? Path.Combine(tokenizerPath, "tokenizer.json") : tokenizerPath);
            var set = PromptSet.Create(tokenizer, SourceManifest.Load(options.Text("--manifest")), options.Int("--prompt-tokens"), options.Int("--output-tokens"),
                options.Ints("--levels"), options.Int("--requests"), options.Int("--seed", 1));
            File.WriteAllText(options.Text("--out"), JsonSerializer.Serialize(set, PromptSet.Json));
            break;
        case "genai":
            var result = GenAiRunner.Run(options.Text("--model"), PromptSet.Load(options.Text("--prompts")), options.Int("--threads", 2), options.Int("--context-length", 512));
            File.WriteAllText(options.Text("--out"), JsonSerializer.Serialize(result, PromptSet.Json));
            break;
        case "steps":
            StepPair.Run(options.Text("--model"), options.Int("--threads", 2), options.Int("--context-length", 512), options.Int("--prompt-tokens", 256),
                options.Int("--steps", 64), options.Int("--rounds", 10));
            break;
        case "report":
            var notesFile = options.OptionalText("--notes");
            var notes = notesFile is null ? [] : File.ReadAllLines(notesFile).Where(l => !string.IsNullOrWhiteSpace(l)).ToArray();
            PeerReport.Write(options.Text("--raw"), options.Text("--out"), options.Text("--title"), notes);
            break;
        default:
            throw new UsageException($"unknown command '{args[0]}'");
    }
    return 0;
}
// A model folder either engine cannot load is reported like a bad argument, not as a crash.
catch (Exception e) when (e is UsageException or IOException or InvalidDataException or JsonException or UnauthorizedAccessException
    or Microsoft.ML.OnnxRuntimeGenAI.OnnxRuntimeGenAIException or InferenceServer.Model.ModelLoadException)
{
    Console.Error.WriteLine($"inference-peers: {e.Message}");
    if (e is UsageException)
        Console.Error.WriteLine(Usage);
    return 1;
}
