using System.CommandLine;
using InferenceServer.ModelBuilder;

namespace InferenceServer.Commands;

/// <summary>build-model: Hugging Face folder (or a config with random weights) to an ONNX model folder.</summary>
internal static class BuildModelCommand
{
    public static Command Create()
    {
        var input = new Option<string?>("--input", "-i") { Description = "Hugging Face model folder: config.json, *.safetensors, tokenizer.json." };
        var randomConfig = new Option<string?>("--random-config") { Description = "Instead of --input: a config.json whose shape gets deterministic random weights (tests, benchmarks)." };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "With --random-config: a folder whose tokenizer files are copied into the model." };
        var seed = new Option<ulong>("--seed") { Description = "With --random-config: the random seed.", DefaultValueFactory = _ => 1 };
        var output = new Option<string?>("--output", "-o") { Description = "The model folder to write." };
        var upgradeGraph = new Option<string?>("--upgrade-graph")
        {
            Description = "Instead of building: rewrite the dense model.onnx of this folder, written before the logits_to_keep input existed, to take it; the weights file is left as it is.",
        };
        var precision = new Option<string>("--precision", "-p") { Description = "fp32 (CPU default), fp16 (GPU), bf16 (GPU, paged graph only) or int4 (4-bit weights, MatMulNBits).", DefaultValueFactory = _ => "fp32" };
        precision.AcceptOnlyFromAmong("fp32", "fp16", "bf16", "int4");
        var graph = new Option<string>("--graph") { Description = "dense (GroupQueryAttention, any device; the CPU path) or paged (PagedAttention over a block pool; CUDA, fp16 or bf16).", DefaultValueFactory = _ => "dense" };
        graph.AcceptOnlyFromAmong("dense", "paged");
        var topK = new Option<int>("--sampling-top-k") { Description = "Paged graph: how many largest logits per sequence it returns for sampling.", DefaultValueFactory = _ => 64 };
        var blockSize = new Option<int>("--int4-block-size") { Description = "Quantization block size for int4.", DefaultValueFactory = _ => 32 };
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace the output folder if it exists." };

        var command = new Command("build-model",
            "Convert a Hugging Face LlamaForCausalLM or Qwen2ForCausalLM model to an ONNX model folder the server loads.")
        {
            input, randomConfig, tokenizer, seed, output, precision, graph, topK, blockSize, overwrite, upgradeGraph,
        };
        command.Validators.Add(result =>
        {
            if (result.GetValue(upgradeGraph) is not null)
            {
                if (result.GetValue(input) is not null || result.GetValue(randomConfig) is not null || result.GetValue(output) is not null)
                    result.AddError("--upgrade-graph rewrites a folder in place: give none of --input, --random-config and --output with it");
                return;
            }
            if ((result.GetValue(input) is null) == (result.GetValue(randomConfig) is null))
                result.AddError("give exactly one of --input and --random-config");
            if (result.GetValue(output) is null)
                result.AddError("--output is required");
        });
        command.SetAction(parseResult => CommandErrors.Run(() =>
        {
            if (parseResult.GetValue(upgradeGraph) is { } upgradeFolder)
            {
                var result = GraphUpgrade.Upgrade(upgradeFolder);
                Console.WriteLine(result == GraphUpgradeResult.Upgraded
                    ? $"upgraded {Path.GetFullPath(upgradeFolder)}: the graph takes logits_to_keep; the weights file is unchanged"
                    : $"{Path.GetFullPath(upgradeFolder)} already takes logits_to_keep; nothing written");
                return 0;
            }
            var options = new BuildOptions
            {
                Precision = parseResult.GetValue(precision) switch
                {
                    "fp16" => Precision.Fp16,
                    "bf16" => Precision.Bf16,
                    "int4" => Precision.Int4,
                    _ => Precision.Fp32,
                },
                Variant = parseResult.GetValue(graph) == "paged" ? GraphVariant.Paged : GraphVariant.Dense,
                SamplingTopK = parseResult.GetValue(topK),
                Int4BlockSize = parseResult.GetValue(blockSize),
                Overwrite = parseResult.GetValue(overwrite),
            };
            var target = parseResult.GetValue(output)!;
            var started = System.Diagnostics.Stopwatch.StartNew();
            if (parseResult.GetValue(input) is { } hfFolder)
            {
                DecoderModelBuilder.BuildFromHuggingFace(hfFolder, target, options);
            }
            else
            {
                var config = HfConfig.Load(parseResult.GetValue(randomConfig)!);
                DecoderModelBuilder.BuildRandom(config, target, options, parseResult.GetValue(seed), parseResult.GetValue(tokenizer));
            }
            Console.WriteLine($"wrote {Path.GetFullPath(target)} ({options.Precision}) in {started.Elapsed.TotalSeconds:F1} s");
            return 0;
        }));
        return command;
    }
}
