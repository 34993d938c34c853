using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using InferenceServer.Model.Lora;
using InferenceServer.ModelBuilder.Checkpoint;

namespace InferenceServer.ModelBuilder.Lora;

/// <summary>One LoRA pair of a PEFT adapter: delta W = scale * B A for one module of one layer.</summary>
public sealed record PeftModule(int Layer, string Module, string AName, string BName, int Rank, int In, int Out);

/// <summary>
/// A Hugging Face PEFT LoRA adapter folder: adapter_config.json and adapter_model.safetensors with
/// tensors named base_model.model.model.layers.N.(self_attn|mlp).MODULE.lora_(A|B).weight, A [r, in]
/// and B [out, r]. What can be converted: plain LoRA (no DoRA, no trained biases, no extra saved
/// modules, one rank and alpha for every module) on the projections of <see cref="LoraNames.Modules"/>.
/// </summary>
public sealed partial class PeftAdapter : IDisposable
{
    public const string ConfigFileName = "adapter_config.json";
    public const string WeightsFileName = "adapter_model.safetensors";

    private readonly SafetensorsFile _weights;

    public string Folder { get; }
    public int Rank { get; }
    public double Alpha { get; }
    public bool UseRsLora { get; }
    public string? BaseModel { get; }

    /// <summary>alpha / r, or alpha / sqrt(r) for rank-stabilized LoRA, as PEFT scales the product.</summary>
    public double Scale => UseRsLora ? Alpha / Math.Sqrt(Rank) : Alpha / Rank;

    /// <summary>Every (layer, module) pair, ordered by layer and module.</summary>
    public IReadOnlyList<PeftModule> Modules { get; }

    private PeftAdapter(string folder, SafetensorsFile weights, int rank, double alpha, bool useRsLora, string? baseModel, IReadOnlyList<PeftModule> modules)
    {
        Folder = folder;
        _weights = weights;
        Rank = rank;
        Alpha = alpha;
        UseRsLora = useRsLora;
        BaseModel = baseModel;
        Modules = modules;
    }

    public static PeftAdapter Load(string folder)
    {
        if (!Directory.Exists(folder))
            throw new ModelBuildException($"{folder}: no such folder");
        var configPath = Path.Combine(folder, ConfigFileName);
        if (!File.Exists(configPath))
            throw new ModelBuildException($"{folder}: no {ConfigFileName}; a PEFT LoRA adapter folder holds {ConfigFileName} and {WeightsFileName}");
        var weightsPath = Path.Combine(folder, WeightsFileName);
        if (!File.Exists(weightsPath))
            throw new ModelBuildException($"{folder}: no {WeightsFileName}" + (File.Exists(Path.Combine(folder, "adapter_model.bin")) ? " (only adapter_model.bin: save the adapter with safe_serialization)" : ""));

        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(File.ReadAllText(configPath));
        }
        catch (JsonException e)
        {
            throw new ModelBuildException($"{configPath}: not valid JSON ({e.Message})", e);
        }
        int rank;
        double alpha;
        bool useRsLora;
        string? baseModel;
        Func<string, bool> targeted;
        HashSet<int>? layers;
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new ModelBuildException($"{configPath}: must be a JSON object");
            CheckUnsupported(root, configPath);
            rank = root.TryGetProperty("r", out var r) && r.ValueKind == JsonValueKind.Number && r.TryGetInt32(out var rv) && rv > 0
                ? rv
                : throw new ModelBuildException($"{configPath}: 'r' (the rank) must be a positive integer");
            alpha = !root.TryGetProperty("lora_alpha", out var a) || a.ValueKind == JsonValueKind.Null ? 8
                : a.ValueKind == JsonValueKind.Number ? a.GetDouble()
                : throw new ModelBuildException($"{configPath}: 'lora_alpha' must be a number");
            useRsLora = root.TryGetProperty("use_rslora", out var rs) && rs.ValueKind == JsonValueKind.True;
            baseModel = root.TryGetProperty("base_model_name_or_path", out var bm) && bm.ValueKind == JsonValueKind.String ? bm.GetString() : null;
            targeted = TargetFilter(root, configPath);
            layers = LayersToTransform(root, configPath);
        }

        var weights = SafetensorsFile.Open(weightsPath);
        try
        {
            var modules = ReadModules(weights, weightsPath, rank, targeted, layers);
            return new PeftAdapter(folder, weights, rank, alpha, useRsLora, baseModel, modules);
        }
        catch
        {
            weights.Dispose();
            throw;
        }
    }

    private static void CheckUnsupported(JsonElement root, string path)
    {
        bool Set(string name) => root.TryGetProperty(name, out var v) && v.ValueKind switch
        {
            JsonValueKind.Null or JsonValueKind.False or JsonValueKind.Undefined => false,
            JsonValueKind.Object => v.EnumerateObject().Any(),
            JsonValueKind.Array => v.GetArrayLength() > 0,
            JsonValueKind.String => v.GetString() is { Length: > 0 } s && s != "none",
            _ => true,
        };
        if (root.TryGetProperty("peft_type", out var type) && type.GetString() is { } peftType && peftType != "LORA")
            throw new ModelBuildException($"{path}: peft_type '{peftType}' is not supported; only LORA adapters convert");
        if (Set("use_dora"))
            throw new ModelBuildException($"{path}: DoRA adapters (use_dora) are not supported");
        if (Set("bias"))
            throw new ModelBuildException($"{path}: adapters that train biases (bias '{root.GetProperty("bias").GetString()}') are not supported; bias must be 'none'");
        if (Set("fan_in_fan_out"))
            throw new ModelBuildException($"{path}: fan_in_fan_out adapters (Conv1D layers) are not supported");
        if (Set("modules_to_save"))
            throw new ModelBuildException($"{path}: modules_to_save (fully trained extra modules) are not supported");
        if (Set("rank_pattern") || Set("alpha_pattern"))
            throw new ModelBuildException($"{path}: per-module ranks or alphas (rank_pattern, alpha_pattern) are not supported");
        if (Set("layer_replication"))
            throw new ModelBuildException($"{path}: layer_replication is not supported");
    }

    // PEFT's target_modules: a list of module names (or name suffixes), "all-linear", or a regular
    // expression that must match a module's whole path.
    private static Func<string, bool> TargetFilter(JsonElement root, string path)
    {
        if (!root.TryGetProperty("target_modules", out var targets) || targets.ValueKind == JsonValueKind.Null)
            throw new ModelBuildException($"{path}: 'target_modules' is missing");
        if (targets.ValueKind == JsonValueKind.String)
        {
            var text = targets.GetString()!;
            if (text == "all-linear")
                return _ => true;
            Regex pattern;
            try
            {
                pattern = new Regex($"^(?:{text})$", RegexOptions.CultureInvariant, TimeSpan.FromSeconds(1));
            }
            catch (ArgumentException e)
            {
                throw new ModelBuildException($"{path}: target_modules '{text}' is not a valid regular expression ({e.Message})", e);
            }
            return modulePath => pattern.IsMatch(modulePath);
        }
        if (targets.ValueKind != JsonValueKind.Array)
            throw new ModelBuildException($"{path}: 'target_modules' must be a list of module names or a string");
        var names = new List<string>();
        foreach (var entry in targets.EnumerateArray())
        {
            var name = entry.GetString() ?? "";
            var module = name[(name.LastIndexOf('.') + 1)..];
            if (!LoraNames.Modules.Contains(module))
                throw new ModelBuildException($"{path}: target module '{name}' is not supported; adapters can target {string.Join(", ", LoraNames.Modules)}");
            names.Add(name);
        }
        return modulePath => names.Any(n => modulePath == n || modulePath.EndsWith("." + n, StringComparison.Ordinal));
    }

    private static HashSet<int>? LayersToTransform(JsonElement root, string path)
    {
        if (!root.TryGetProperty("layers_to_transform", out var layers) || layers.ValueKind == JsonValueKind.Null)
            return null;
        try
        {
            return layers.ValueKind == JsonValueKind.Number
                ? [layers.GetInt32()]
                : layers.EnumerateArray().Select(l => l.GetInt32()).ToHashSet();
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException)
        {
            throw new ModelBuildException($"{path}: 'layers_to_transform' must be a layer index or a list of them", e);
        }
    }

    private static List<PeftModule> ReadModules(SafetensorsFile weights, string path, int rank, Func<string, bool> targeted, HashSet<int>? layers)
    {
        var pairs = new SortedDictionary<(int Layer, int Module), (string? A, string? B)>();
        foreach (var name in weights.Names)
        {
            var match = TensorName().Match(name);
            if (!match.Success)
                throw new ModelBuildException($"{path}: tensor '{name}' is not a LoRA weight of a supported module; adapters can target {string.Join(", ", LoraNames.Modules)} of the decoder layers");
            var modulePath = match.Groups["module"].Value;
            var inLayer = LayerModule().Match(modulePath);
            var moduleIndex = inLayer.Success ? IndexOf(inLayer.Groups["name"].Value) : -1;
            if (moduleIndex < 0 || (inLayer.Groups["section"].Value == "mlp") != (moduleIndex >= 4))
                throw new ModelBuildException($"{path}: tensor '{name}' adapts '{modulePath}', a module adapters cannot target; supported are {string.Join(", ", LoraNames.Modules)} of the decoder layers");
            var layer = int.Parse(inLayer.Groups["layer"].ValueSpan, NumberStyles.None, CultureInfo.InvariantCulture);
            if (!targeted(modulePath) || (layers is not null && !layers.Contains(layer)))
                throw new ModelBuildException($"{path}: tensor '{name}' adapts '{modulePath}', which adapter_config.json does not target");
            var key = (layer, moduleIndex);
            var pair = pairs.GetValueOrDefault(key);
            pairs[key] = match.Groups["half"].Value == "A" ? (name, pair.B) : (pair.A, name);
        }
        if (pairs.Count == 0)
            throw new ModelBuildException($"{path}: holds no LoRA weights");

        var modules = new List<PeftModule>();
        foreach (var ((layer, moduleIndex), (aName, bName)) in pairs)
        {
            var module = LoraNames.Modules[moduleIndex];
            if (aName is null || bName is null)
            {
                var present = aName ?? bName!;
                var missing = aName is null ? present.Replace(".lora_B.", ".lora_A.", StringComparison.Ordinal) : present.Replace(".lora_A.", ".lora_B.", StringComparison.Ordinal);
                throw new ModelBuildException($"{path}: tensor '{missing}' is missing (its pair '{present}' is there)");
            }
            var a = weights.ShapeOf(aName);
            var b = weights.ShapeOf(bName);
            if (a.Count != 2 || b.Count != 2)
                throw new ModelBuildException($"{path}: '{aName}' [{string.Join(", ", a)}] and '{bName}' [{string.Join(", ", b)}] must be matrices");
            if (a[0] != rank || b[1] != rank)
                throw new ModelBuildException($"{path}: '{aName}' [{string.Join(", ", a)}] and '{bName}' [{string.Join(", ", b)}] have rank {(a[0] != rank ? a[0] : b[1])}, but adapter_config.json says r = {rank}");
            modules.Add(new PeftModule(layer, module, aName, bName, rank, checked((int)a[1]), checked((int)b[0])));
        }
        return modules;
    }

    private static int IndexOf(string module)
    {
        for (var i = 0; i < LoraNames.Modules.Count; i++)
        {
            if (LoraNames.Modules[i] == module)
                return i;
        }
        return -1;
    }

    /// <summary>A [r, in] as float32.</summary>
    public float[] ReadA(PeftModule module) => _weights.Read(module.AName, [module.Rank, module.In]);

    /// <summary>B [out, r] as float32.</summary>
    public float[] ReadB(PeftModule module) => _weights.Read(module.BName, [module.Out, module.Rank]);

    public void Dispose() => _weights.Dispose();

    [GeneratedRegex(@"^base_model\.model\.(?<module>.+)\.lora_(?<half>A|B)\.weight$", RegexOptions.CultureInvariant)]
    private static partial Regex TensorName();

    [GeneratedRegex(@"^model\.layers\.(?<layer>\d+)\.(?<section>self_attn|mlp)\.(?<name>[a-z_]+)$", RegexOptions.CultureInvariant)]
    private static partial Regex LayerModule();
}
