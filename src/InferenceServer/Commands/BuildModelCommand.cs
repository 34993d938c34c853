using System.CommandLine;
using InferenceServer.Model;
using InferenceServer.Model.Lora;
using InferenceServer.ModelBuilder;
using InferenceServer.ModelBuilder.Checkpoint;
using InferenceServer.ModelBuilder.Gguf;
using InferenceServer.ModelBuilder.Lora;

namespace InferenceServer.Commands;

/// <summary>
/// build-model: Hugging Face folder (or a config with random weights) to an ONNX model folder, a
/// GGUF file or a Hugging Face folder; or a PEFT LoRA adapter to an adapter of a model folder built
/// with adapter inputs.
/// </summary>
internal static class BuildModelCommand
{
    public static Command Create()
    {
        var input = new Option<string?>("--input", "-i") { Description = "Hugging Face model folder: config.json, *.safetensors, tokenizer.json." };
        var randomConfig = new Option<string?>("--random-config") { Description = "Instead of --input: a config.json whose shape gets deterministic random weights (tests, benchmarks)." };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "With --random-config: a folder whose tokenizer files are copied into the model." };
        var seed = new Option<ulong>("--seed") { Description = "With --random-config: the random seed.", DefaultValueFactory = _ => 1 };
        var output = new Option<string?>("--output", "-o") { Description = "The model folder (or, for --format gguf, the file) to write." };
        var format = new Option<string>("--format") { Description = "onnx (our model folder), gguf (one llama.cpp file, fp32 or fp16, LlamaForCausalLM) or hf (with --random-config: a Hugging Face folder, float32 safetensors).", DefaultValueFactory = _ => "onnx" };
        format.AcceptOnlyFromAmong("onnx", "gguf", "hf");
        var loraTargets = new Option<string?>("--lora-targets") { Description = "Give the graph adapter inputs for these modules (comma-separated q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj, or all), so LoRA adapters load at run time." };
        var loraInput = new Option<string?>("--lora-input") { Description = "Instead of --input: a PEFT LoRA adapter folder (adapter_config.json, adapter_model.safetensors) to convert for --base." };
        var baseModel = new Option<string?>("--base") { Description = "With --lora-input: the model folder (built with --lora-targets) the adapter is written into, as adapters/NAME." };
        var adapterName = new Option<string?>("--name") { Description = "With --lora-input: the adapter's name (default: the PEFT folder's name)." };
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
        var fimOrder = new Option<string?>("--fim-order")
        {
            Description = "The fill-in-the-middle order the model was trained for, written to serving.json: prefix-suffix-middle or suffix-prefix-middle "
                + "(trained with both; an editor's consecutive prompts then differ only at the end and hit the prefix cache). Default: the input folder's serving.json, if any.",
        };
        fimOrder.AcceptOnlyFromAmong([.. ServingFile.FimOrders]);
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace the output folder if it exists." };

        var command = new Command("build-model",
            "Convert a Hugging Face LlamaForCausalLM or Qwen2ForCausalLM model to an ONNX model folder the server loads (or a Llama model to a GGUF file for llama.cpp).")
        {
            input, randomConfig, tokenizer, seed, output, format, precision, graph, topK, blockSize, loraTargets, loraInput, baseModel, adapterName, upgradeGraph, fimOrder, overwrite,
        };
        command.Validators.Add(result =>
        {
            if (result.GetValue(upgradeGraph) is not null)
            {
                if (result.GetValue(input) is not null || result.GetValue(randomConfig) is not null || result.GetValue(loraInput) is not null || result.GetValue(output) is not null)
                    result.AddError("--upgrade-graph rewrites a folder in place: give none of --input, --random-config, --lora-input and --output with it");
                return;
            }
            var sources = new[] { result.GetValue(input), result.GetValue(randomConfig), result.GetValue(loraInput) }.Count(s => s is not null);
            if (sources != 1)
            {
                result.AddError("give exactly one of --input, --random-config and --lora-input");
                return;
            }
            if (result.GetValue(loraInput) is not null)
            {
                if (result.GetValue(baseModel) is null)
                    result.AddError("--lora-input needs --base, the model folder to convert the adapter for");
                return;
            }
            if (result.GetValue(output) is null)
                result.AddError("--output is required");
            var chosen = result.GetValue(format);
            if (chosen == "hf" && result.GetValue(input) is not null)
                result.AddError("--format hf writes random weights: use it with --random-config (a Hugging Face folder is already one)");
            if (chosen == "gguf" && result.GetValue(precision) is "bf16" or "int4")
                result.AddError("--format gguf writes fp32 or fp16 weights");
            if (chosen != "onnx" && result.GetResult(graph) is { Implicit: false })
                result.AddError("--graph applies to --format onnx only");
            if (chosen == "gguf" && result.GetValue(fimOrder) is not null)
                result.AddError("--fim-order applies to --format onnx and hf (a GGUF file has no place for it)");
            if (chosen != "onnx" && result.GetValue(loraTargets) is not null)
                result.AddError("--lora-targets applies to --format onnx only");
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
            if (parseResult.GetValue(loraInput) is { } peftFolder)
            {
                var written = LoraAdapterConverter.Convert(peftFolder, parseResult.GetValue(baseModel)!, parseResult.GetValue(adapterName), parseResult.GetValue(overwrite));
                Console.WriteLine($"wrote adapter {written}");
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
                LoraTargets = parseResult.GetValue(loraTargets) switch
                {
                    null => [],
                    "all" => LoraNames.Modules,
                    var list => list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
                },
            };
            var target = parseResult.GetValue(output)!;
            var started = System.Diagnostics.Stopwatch.StartNew();
            var hfFolder = parseResult.GetValue(input);
            if (hfFolder is not null && !Directory.Exists(hfFolder))
                throw new ModelBuildException($"{hfFolder}: no such folder");
            options = options with { FimOrder = parseResult.GetValue(fimOrder) ?? (hfFolder is null ? null : ServingFile.ReadFimOrder(hfFolder)) };
            var config = HfConfig.Load(hfFolder is null ? parseResult.GetValue(randomConfig)! : Path.Combine(hfFolder, "config.json"));
            var tokenizerFolder = hfFolder ?? parseResult.GetValue(tokenizer);
            using IWeightSource weights = hfFolder is null ? new RandomWeights(parseResult.GetValue(seed)) : new HfCheckpoint(hfFolder);
            switch (parseResult.GetValue(format))
            {
                case "gguf":
                    LlamaGgufBuilder.Build(config, weights, tokenizerFolder ?? throw new ModelBuildException("--format gguf with --random-config needs --tokenizer (the file carries the tokenizer)"),
                        target, options.Precision, options.Overwrite);
                    break;
                case "hf":
                    HfFolderWriter.Write(parseResult.GetValue(randomConfig)!, weights, target, tokenizerFolder, options.Overwrite, options.FimOrder);
                    break;
                default:
                    DecoderModelBuilder.Build(config, weights, target, options, tokenizerFolder);
                    break;
            }
            Console.WriteLine($"wrote {Path.GetFullPath(target)} ({options.Precision}) in {started.Elapsed.TotalSeconds:F1} s");
            return 0;
        }));
        return command;
    }
}
