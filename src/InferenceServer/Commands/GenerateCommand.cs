using System.CommandLine;
using System.Globalization;
using InferenceServer.Model;

namespace InferenceServer.Commands;

/// <summary>generate: greedy decoding of a prompt in-process, for trying a model folder quickly.</summary>
internal static class GenerateCommand
{
    public static Command Create()
    {
        var model = ModelOption.Create();
        var promptIds = new Option<string>("--prompt-ids") { Description = "Prompt token ids, comma-separated.", Required = true };
        var maxTokens = new Option<int>("--max-tokens", "-n") { Description = "Tokens to generate.", DefaultValueFactory = _ => 16 };
        var threads = new Option<int>("--threads") { Description = "ONNX Runtime intra-op threads (0: one per core)." };

        var command = new Command("generate", "Generate greedily from token ids and print the new ids as a JSON array.")
        {
            model, promptIds, maxTokens, threads,
        };
        command.SetAction(parseResult => CommandErrors.Run(() =>
        {
            var prompt = ParseIds(parseResult.GetValue(promptIds)!);
            var count = parseResult.GetValue(maxTokens);
            var folder = ModelFolder.Load(parseResult.GetValue(model)!);
            using var runner = new DecoderRunner(folder, new RunnerOptions
            {
                MaxBatch = 1,
                MaxSequenceLength = Math.Min(folder.Config.Model.ContextLength, prompt.Length + count),
                IntraOpThreads = parseResult.GetValue(threads),
            });
            var generated = Greedy.Generate(runner, prompt, count, folder.Config.Model.EosTokenId);
            Console.WriteLine($"[{string.Join(",", generated)}]");
            return 0;
        }));
        return command;
    }

    private static int[] ParseIds(string text)
    {
        var parts = text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (parts.Length == 0)
            throw new ArgumentException("--prompt-ids needs at least one token id");
        return parts.Select(p => int.TryParse(p, NumberStyles.Integer, CultureInfo.InvariantCulture, out var id)
            ? id
            : throw new ArgumentException($"--prompt-ids: '{p}' is not a token id")).ToArray();
    }
}
