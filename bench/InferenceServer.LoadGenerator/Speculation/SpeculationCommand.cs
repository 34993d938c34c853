using System.CommandLine;
using System.Globalization;
using InferenceServer.LoadGenerator.Scenarios;

namespace InferenceServer.LoadGenerator.Speculation;

/// <summary>The "speculation" subcommand: what prompt-lookup drafts would gain on the IDE workload's prompts.</summary>
internal static class SpeculationCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model", "-m") { Description = "Model folder (a dense graph with logits_to_keep).", DefaultValueFactory = _ => Path.Combine("models", "minicoder") };
        var manifest = new Option<string?>("--manifest") { Description = "JSON list of source files the typing sessions type (default: workloads/python-stdlib.json)." };
        var seed = new Option<int>("--seed") { Description = "Seed of the typing sessions.", DefaultValueFactory = _ => 1 };
        var sessions = new Option<int>("--sessions") { Description = "Typing sessions the prompts come from.", DefaultValueFactory = _ => 4 };
        var prompts = new Option<int>("--prompts") { Description = "Prompts to decode.", DefaultValueFactory = _ => 40 };
        var stride = new Option<int>("--keystroke-stride") { Description = "Keystrokes of a typing session between two prompts.", DefaultValueFactory = _ => 12 };
        var output = new Option<int>("--output-tokens") { Description = "Tokens to generate per prompt (fewer when the model ends the text).", DefaultValueFactory = _ => 64 };
        var drafts = new Option<string>("--drafts") { Description = "Draft lengths k to try, comma-separated.", DefaultValueFactory = _ => "2,4,8" };
        var maxNgram = new Option<int>("--max-ngram") { Description = "Longest suffix looked up.", DefaultValueFactory = _ => 3 };
        var minNgram = new Option<int>("--min-ngram") { Description = "Shortest suffix looked up.", DefaultValueFactory = _ => 1 };
        var shortMatch = new Option<int?>("--short-match-drafts") { Description = "The most drafts after a suffix shorter than --max-ngram matched (0: none; default: k)." };
        var threads = new Option<int>("--threads") { Description = "ONNX Runtime intra-op threads (0: one per core)." };
        var rounds = new Option<int>("--cost-rounds") { Description = "Rounds of the step cost measurement.", DefaultValueFactory = _ => 300 };
        var baseline = new Option<string?>("--baseline-model") { Description = "Another folder of the same model (say, its graph before logits_to_keep): its one-token decode step is timed alternately with this one's." };
        var outFile = new Option<string?>("--out", "-o") { Description = "Also write the report (Markdown) to this file." };

        var command = new Command("speculation",
            "Decode the IDE workload's prompts greedily on the bare runner, plainly and with prompt-lookup drafts of each length k checked in one step; "
            + "report the acceptance, the tokens per step, whether the text is the same, the cost of each step length and the speed-up.")
        {
            model, manifest, seed, sessions, prompts, stride, output, drafts, maxNgram, minNgram, shortMatch, threads, rounds, baseline, outFile,
        };
        command.SetAction((parseResult, cancellationToken) =>
        {
            try
            {
                var settings = new SpeculationSettings
                {
                    Model = parseResult.GetValue(model)!,
                    Manifest = parseResult.GetValue(manifest) ?? Path.Combine(AppContext.BaseDirectory, "workloads", "python-stdlib.json"),
                    Seed = parseResult.GetValue(seed),
                    Sessions = Positive(parseResult.GetValue(sessions), "--sessions"),
                    Prompts = Positive(parseResult.GetValue(prompts), "--prompts"),
                    KeystrokeStride = Positive(parseResult.GetValue(stride), "--keystroke-stride"),
                    OutputTokens = Positive(parseResult.GetValue(output), "--output-tokens"),
                    Drafts = parseResult.GetValue(drafts)!.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
                        .Select(d => int.TryParse(d, NumberStyles.None, CultureInfo.InvariantCulture, out var k) && k > 0 ? k : throw new ArgumentException($"--drafts: '{d}' is not a positive number")).ToArray(),
                    MaxNgram = parseResult.GetValue(maxNgram),
                    MinNgram = parseResult.GetValue(minNgram),
                    ShortMatchDrafts = parseResult.GetValue(shortMatch) is { } limit && limit < 0 ? throw new ArgumentException("--short-match-drafts cannot be negative") : parseResult.GetValue(shortMatch),
                    Threads = parseResult.GetValue(threads),
                    CostRounds = Positive(parseResult.GetValue(rounds), "--cost-rounds"),
                    BaselineModel = parseResult.GetValue(baseline),
                };
                if (settings.Drafts.Count == 0)
                    throw new ArgumentException("--drafts: give at least one draft length");
                var report = SpeculationBench.Run(settings, Console.Error, cancellationToken);
                Console.WriteLine(report);
                if (parseResult.GetValue(outFile) is { } path)
                    File.WriteAllText(path, report);
                return Task.FromResult(0);
            }
            catch (Exception e) when (e is ArgumentException or InvalidOperationException or IOException or InvalidDataException
                or Model.ModelLoadException or Tokenizer.TokenizerLoadException)
            {
                Console.Error.WriteLine($"error: {e.Message}");
                return Task.FromResult(1);
            }
        });
        return command;
    }

    private static int Positive(int value, string name) =>
        value > 0 ? value : throw new ArgumentException($"{name} must be positive, not {value}");
}
