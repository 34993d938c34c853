using System.Text.Json;
using System.Text.RegularExpressions;
using InferenceServer.Model;
using InferenceServer.Model.Lora;
using InferenceServer.ModelBuilder.Onnx;

namespace InferenceServer.ModelBuilder.Lora;

/// <summary>
/// Converts a PEFT LoRA adapter into the adapter format of a base model folder built with adapter
/// inputs: MODEL/adapters/NAME/ with adapter.onnx_adapter (ONNX Runtime's adapter format, one
/// adapter per stack: A [1, in, rank] and B [1, rank, out] for each packed projection it changes)
/// and adapter.json (what it was converted from). The modules of a packed projection are laid side
/// by side: A's columns are the modules' A rows, B is block-diagonal in their outputs (q, k, v and
/// gate, up), and B carries PEFT's scale, so x A B is exactly the sum of each module's
/// scale * x A_m^T B_m^T.
/// </summary>
public static partial class LoraAdapterConverter
{
    public static string Convert(string peftFolder, string baseFolder, string? name = null, bool overwrite = false)
    {
        var model = LoadBase(baseFolder);
        name ??= Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(peftFolder)));
        if (!AdapterName().IsMatch(name))
            throw new ModelBuildException($"adapter name '{name}' must be letters, digits, '.', '_' or '-', not starting with '.'");
        var target = Path.Combine(model.Folder.Path, LoraNames.AdaptersFolder, name);
        if (Directory.Exists(target) && !overwrite)
            throw new ModelBuildException($"{target} already exists (pass overwrite to replace it)");

        using var adapter = PeftAdapter.Load(peftFolder);
        var tensors = Tensors(adapter, model);

        StagedFolder.Write(target, overwrite, staging =>
        {
            OnnxAdapterFile.Write(Path.Combine(staging, LoraNames.WeightsFileName), tensors);
            File.WriteAllText(Path.Combine(staging, LoraNames.ConfigFileName), Describe(adapter, name));
        });
        return target;
    }

    private sealed record BaseModel(ModelFolder Folder, Dictionary<string, (int In, int Out)> Projections, int LayerCount);

    // The base's adapter inputs, read from the graph file (the weights stay in the data file).
    private static BaseModel LoadBase(string baseFolder)
    {
        ModelFolder folder;
        try
        {
            folder = ModelFolder.Load(baseFolder);
        }
        catch (ModelLoadException e)
        {
            throw new ModelBuildException($"--base: {e.Message}", e);
        }
        ModelProto graph;
        using (var stream = File.OpenRead(folder.DecoderPath))
            graph = ModelProto.Parser.ParseFrom(stream);
        var projections = new Dictionary<string, (int, int)>(StringComparer.Ordinal);
        foreach (var input in graph.Graph.Input)
        {
            if (!LoraNames.TryParse(input.Name, out _, out _, out var isB) || isB)
                continue;
            var a = input.Type.TensorType.Shape.Dim;
            var b = graph.Graph.Input.Single(i => i.Name == input.Name[..^LoraNames.ASuffix.Length] + LoraNames.BSuffix).Type.TensorType.Shape.Dim;
            projections.Add(input.Name, ((int)a[1].DimValue, (int)b[2].DimValue));
        }
        if (projections.Count == 0)
            throw new ModelBuildException($"{folder.Path}: the base model was built without adapter inputs; build it with build-model --lora-targets");
        return new BaseModel(folder, projections, folder.Config.Model.Decoder.NumHiddenLayers);
    }

    private static List<AdapterTensor> Tensors(PeftAdapter adapter, BaseModel model)
    {
        var decoder = model.Folder.Config.Model.Decoder;
        var tensors = new List<AdapterTensor>();
        foreach (var byLayer in adapter.Modules.GroupBy(m => m.Layer))
        {
            var layer = byLayer.Key;
            if (layer >= model.LayerCount)
                throw new ModelBuildException($"{adapter.Folder}: the adapter changes layer {layer}, but the base model has {model.LayerCount} layers");
            foreach (var projection in LoraNames.Projections)
            {
                var modules = byLayer.Where(m => projection.Modules.Contains(m.Module)).ToList();
                if (modules.Count == 0)
                    continue;
                var aName = LoraNames.A(layer, projection);
                if (!model.Projections.TryGetValue(aName, out var dims))
                    throw new ModelBuildException($"{adapter.Folder}: the adapter changes {string.Join(", ", modules.Select(m => m.Module))}, but the base model has no adapter inputs for {projection.Name} (build it with --lora-targets naming them)");
                var outputs = ModuleOutputs(projection, dims.Out, decoder);
                var rank = modules.Sum(m => m.Rank);
                var a = new float[dims.In * rank];
                var b = new float[rank * dims.Out];
                var column = 0;
                foreach (var module in modules)
                {
                    var (offset, width) = outputs[module.Module];
                    if (module.In != dims.In || module.Out != width)
                        throw new ModelBuildException($"{adapter.Folder}: layer {layer} {module.Module} maps {module.In} to {module.Out} features, the base model's {width} from {dims.In}: the adapter is for another model");
                    var peftA = adapter.ReadA(module); // [r, in]
                    var peftB = adapter.ReadB(module); // [out, r]
                    for (var j = 0; j < module.Rank; j++)
                    {
                        for (var i = 0; i < dims.In; i++)
                            a[i * rank + column + j] = peftA[j * dims.In + i];
                        for (var o = 0; o < width; o++)
                            b[(column + j) * dims.Out + offset + o] = (float)(adapter.Scale * peftB[o * module.Rank + j]);
                    }
                    column += module.Rank;
                }
                tensors.Add(new AdapterTensor(aName, [1, dims.In, rank], a));
                tensors.Add(new AdapterTensor(LoraNames.B(layer, projection), [1, rank, dims.Out], b));
            }
        }
        return tensors;
    }

    // Where each module's outputs sit in its packed projection: q, k, v and gate, up side by side.
    private static Dictionary<string, (int Offset, int Width)> ModuleOutputs(LoraProjection projection, int width, GenaiDecoderSection decoder)
    {
        var q = decoder.NumAttentionHeads * decoder.HeadSize;
        var kv = decoder.NumKeyValueHeads * decoder.HeadSize;
        return projection.Modules.Count switch
        {
            3 => new() { ["q_proj"] = (0, q), ["k_proj"] = (q, kv), ["v_proj"] = (q + kv, kv) },
            2 => new() { ["gate_proj"] = (0, width / 2), ["up_proj"] = (width / 2, width / 2) },
            _ => new() { [projection.Modules[0]] = (0, width) },
        };
    }

    private static string Describe(PeftAdapter adapter, string name) => JsonSerializer.Serialize(new Dictionary<string, object?>
    {
        ["name"] = name,
        ["peft_type"] = "LORA",
        ["r"] = adapter.Rank,
        ["lora_alpha"] = adapter.Alpha,
        ["use_rslora"] = adapter.UseRsLora,
        ["scale"] = adapter.Scale,
        ["target_modules"] = adapter.Modules.Select(m => m.Module).Distinct().ToArray(),
        ["layers"] = adapter.Modules.Select(m => m.Layer).Distinct().ToArray(),
        ["base_model_name_or_path"] = adapter.BaseModel,
        ["weights"] = LoraNames.WeightsFileName,
    }, new JsonSerializerOptions { WriteIndented = true });

    [GeneratedRegex(@"^[A-Za-z0-9_-][A-Za-z0-9._-]*$", RegexOptions.CultureInvariant)]
    private static partial Regex AdapterName();
}
