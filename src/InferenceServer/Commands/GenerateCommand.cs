using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using InferenceServer.Engine;
using InferenceServer.Engine.Sampling;
using InferenceServer.Model;

namespace InferenceServer.Commands;

/// <summary>generate: one request through the real engine, in-process; text streams to stdout as it is generated.</summary>
internal static class GenerateCommand
{
    public static Command Create()
    {
        var model = ModelOption.Create();
        var prompt = new Option<string?>("--prompt") { Description = "Prompt text (default: standard input, unless --prompt-ids)." };
        var promptIds = new Option<string?>("--prompt-ids") { Description = "Prompt token ids, comma-separated, instead of text." };
        var maxTokens = new Option<int>("--max-tokens", "-n") { Description = "Most tokens to generate.", DefaultValueFactory = _ => 64 };
        var temperature = new Option<double>("--temperature") { Description = "0 is greedy.", DefaultValueFactory = _ => 0 };
        var topK = new Option<int>("--top-k") { Description = "Sample among the k most likely tokens (0: off)." };
        var topP = new Option<double>("--top-p") { Description = "Nucleus sampling mass.", DefaultValueFactory = _ => 1 };
        var minP = new Option<double>("--min-p") { Description = "Drop tokens below this fraction of the top probability." };
        var repetition = new Option<double>("--repetition-penalty") { Description = "Penalty for tokens already seen (1: off).", DefaultValueFactory = _ => 1 };
        var frequency = new Option<double>("--frequency-penalty") { Description = "Penalty per earlier occurrence in the output." };
        var presence = new Option<double>("--presence-penalty") { Description = "Penalty for any earlier occurrence in the output." };
        var seed = new Option<ulong?>("--seed") { Description = "Seed for sampling: the same seed and prompt give the same output." };
        var stop = new Option<string[]>("--stop") { Description = "Stop string (repeatable).", AllowMultipleArgumentsPerToken = false };
        var json = new Option<bool>("--json") { Description = "Print one JSON object: token ids, text, finish reason and usage." };
        var threads = new Option<int>("--threads") { Description = "ONNX Runtime intra-op threads (0: one per core)." };

        var command = new Command("generate", "Generate from a prompt with the engine and print the text as it comes.")
        {
            model, prompt, promptIds, maxTokens, temperature, topK, topP, minP, repetition, frequency, presence, seed, stop, json, threads,
        };
        command.SetAction(async (parseResult, cancellationToken) =>
        {
            try
            {
                var folder = ModelFolder.Load(parseResult.GetValue(model)!);
                var tokenizer = folder.TokenizerPath is { } path ? Tokenizer.Tokenizer.Load(path) : null;
                var ids = parseResult.GetValue(promptIds) is { } text
                    ? ParseIds(text)
                    : Encode(tokenizer, parseResult.GetValue(prompt) ?? await Console.In.ReadToEndAsync(cancellationToken));
                var request = new GenerationRequest
                {
                    PromptTokens = ids,
                    MaxTokens = parseResult.GetValue(maxTokens),
                    StopStrings = parseResult.GetValue(stop) ?? [],
                    Sampling = new SamplingParameters
                    {
                        Temperature = parseResult.GetValue(temperature),
                        TopK = parseResult.GetValue(topK),
                        TopP = parseResult.GetValue(topP),
                        MinP = parseResult.GetValue(minP),
                        RepetitionPenalty = parseResult.GetValue(repetition),
                        FrequencyPenalty = parseResult.GetValue(frequency),
                        PresencePenalty = parseResult.GetValue(presence),
                        Seed = parseResult.GetValue(seed),
                    },
                };
                if (tokenizer is null)
                    throw new ModelLoadException($"{folder.Path} has no tokenizer.json; generate needs one to print text");
                var capacity = folder.Config.Model.ContextLength;
                if (ids.Length + request.MaxTokens > capacity)
                    throw new RequestValidationException($"the prompt ({ids.Length} tokens) plus --max-tokens ({request.MaxTokens}) exceeds the model's context length of {capacity} tokens");
                using var runner = new DecoderRunner(folder, new RunnerOptions
                {
                    MaxBatch = 1,
                    MaxSequenceLength = ids.Length + request.MaxTokens,
                    IntraOpThreads = parseResult.GetValue(threads),
                });
                await using var engine = new InferenceEngine(runner, tokenizer, new EngineOptions { EosTokenIds = folder.Config.Model.EosTokenId });
                var output = engine.Submit(request, cancellationToken);
                if (parseResult.GetValue(json))
                {
                    var result = await output.CollectAsync(cancellationToken);
                    Console.WriteLine(JsonSerializer.Serialize(new GenerateJson(
                        [.. result.TokenIds], result.Text, result.FinishReason.ToString().ToLowerInvariant(),
                        new UsageJson(result.Usage.PromptTokens, result.Usage.CompletionTokens, result.Usage.CachedPromptTokens,
                            result.Usage.TimeToFirstToken.TotalMilliseconds)), GenerateJsonContext.Default.GenerateJson));
                }
                else
                {
                    await foreach (var e in output.WithCancellation(cancellationToken))
                        Console.Out.Write(e.Text);
                    Console.Out.WriteLine();
                }
                return 0;
            }
            catch (Exception e) when (e is ModelLoadException or RequestValidationException or Tokenizer.TokenizerLoadException or ArgumentException or IOException)
            {
                Console.Error.WriteLine($"error: {e.Message}");
                return 1;
            }
        });
        return command;
    }

    private static int[] Encode(Tokenizer.Tokenizer? tokenizer, string text)
    {
        if (tokenizer is null)
            throw new ArgumentException("the model folder has no tokenizer.json: give --prompt-ids");
        return tokenizer.Encode(text, addSpecialTokens: true);
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

internal sealed record UsageJson(int PromptTokens, int CompletionTokens, int CachedPromptTokens, double TimeToFirstTokenMs);

internal sealed record GenerateJson(int[] TokenIds, string Text, string FinishReason, UsageJson Usage);

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower)]
[JsonSerializable(typeof(GenerateJson))]
internal sealed partial class GenerateJsonContext : JsonSerializerContext;
