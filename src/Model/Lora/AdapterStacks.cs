using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace InferenceServer.Model.Lora;

/// <summary>How a step binds the adapter inputs.</summary>
internal enum AdapterUse
{
    /// <summary>No row has an adapter: nothing is bound and the graph's empty defaults apply.</summary>
    None,

    /// <summary>Every row has the same adapter: a one-entry index, broadcast over the rows.</summary>
    Shared,

    /// <summary>Rows differ: one index entry per row.</summary>
    PerRow,
}

/// <summary>
/// The adapters loaded into a runner whose graph has adapter inputs (<see cref="LoraNames"/>):
/// per layer and packed projection one stack of A matrices [adapters + 1, in, rank] and one of B
/// matrices [adapters + 1, rank, out] in native memory, and the per-row index input. Stack entry 0
/// is all zeros and stands for "no adapter", so rows with and without adapters share a step. The
/// rank of a stack is the largest rank any loaded adapter has there; smaller ones are padded with
/// zeros, which adds nothing. Loading reallocates the stacks (never during a step), so bindings
/// made over the old ones must be dropped (<see cref="Load"/> says when).
/// </summary>
internal sealed unsafe class AdapterStacks : IDisposable
{
    private readonly string _modelPath;
    private readonly Pair[] _pairs;
    private readonly Dictionary<string, (Pair Pair, bool IsB)> _byInput = new(StringComparer.Ordinal);
    private readonly List<string> _names = [];
    private readonly NativeBuffer _index;
    private readonly NativeBuffer _empty = new(64); // what a rank-0 stack is bound over

    /// <summary>One projection of one layer: the A and B inputs that share a rank.</summary>
    private sealed class Pair(string a, string b, int inputs, int outputs)
    {
        public string A { get; } = a;
        public string B { get; } = b;
        public int In { get; } = inputs;
        public int Out { get; } = outputs;
        public int Rank { get; set; }
        public NativeBuffer? AStack { get; set; }
        public NativeBuffer? BStack { get; set; }
    }

    private AdapterStacks(string modelPath, Pair[] pairs, int maxRows)
    {
        _modelPath = modelPath;
        _pairs = pairs;
        foreach (var pair in pairs)
        {
            _byInput.Add(pair.A, (pair, false));
            _byInput.Add(pair.B, (pair, true));
        }
        _index = new NativeBuffer((long)maxRows * sizeof(long));
    }

    /// <summary>Loaded adapters; ids run from 1 (0 is the base model alone).</summary>
    public int Count => _names.Count;

    public IReadOnlyList<string> Names => _names;

    /// <summary>
    /// The graph's adapter inputs, or null when it has none. They are inputs with defaults, which
    /// ONNX Runtime lists as overridable initializers. Every A input needs its B input and the
    /// index input; the shapes must be [adapters, in, rank] and [adapters, rank, out].
    /// </summary>
    public static AdapterStacks? Discover(IReadOnlyDictionary<string, NodeMetadata> inputs, string modelPath, int maxRows)
    {
        var pairs = new List<Pair>();
        foreach (var (name, meta) in inputs)
        {
            if (!LoraNames.TryParse(name, out var layer, out var projection, out var isB) || isB)
                continue;
            var bName = LoraNames.B(layer, projection);
            if (!inputs.TryGetValue(bName, out var bMeta))
                throw new ModelLoadException($"{modelPath}: the graph has the adapter input '{name}' but not '{bName}'");
            if (meta.ElementDataType != TensorElementType.Float || bMeta.ElementDataType != TensorElementType.Float)
                throw new ModelLoadException($"{modelPath}: adapter inputs '{name}' and '{bName}' must be float32");
            var a = meta.Dimensions;
            var b = bMeta.Dimensions;
            if (a.Length != 3 || b.Length != 3 || a[1] <= 0 || b[2] <= 0)
                throw new ModelLoadException($"{modelPath}: adapter inputs '{name}' [{string.Join(", ", a)}] and '{bName}' [{string.Join(", ", b)}] must be [adapters, in, rank] and [adapters, rank, out]");
            pairs.Add(new Pair(name, bName, a[1], b[2]));
        }
        if (pairs.Count == 0)
            return null;
        if (!inputs.TryGetValue(LoraNames.AdapterIndex, out var index) || index.ElementDataType != TensorElementType.Int64)
            throw new ModelLoadException($"{modelPath}: the graph has adapter inputs but no int64 '{LoraNames.AdapterIndex}' input");
        return new AdapterStacks(modelPath, [.. pairs], maxRows);
    }

    /// <summary>Whether the runner knows the input name as one of the adapter inputs.</summary>
    public bool IsAdapterInput(string name) => name == LoraNames.AdapterIndex || _byInput.ContainsKey(name);

    public bool TryGetId(string name, out int id)
    {
        id = _names.IndexOf(name) + 1;
        return id > 0;
    }

    /// <summary>
    /// Loads an adapter folder (<see cref="LoraNames.WeightsFileName"/> inside it) under a name and
    /// returns its id. Every tensor must be one of the graph's adapter inputs with one adapter in
    /// its stack and the graph's in and out sizes; A and B of a projection must agree on the rank.
    /// </summary>
    public int Load(string name, string folder)
    {
        if (string.IsNullOrWhiteSpace(name))
            throw new ArgumentException("an adapter needs a name", nameof(name));
        if (_names.Contains(name))
            throw new ArgumentException($"an adapter named '{name}' is already loaded", nameof(name));
        var file = Path.Combine(folder, LoraNames.WeightsFileName);
        if (!File.Exists(file))
            throw new ModelLoadException($"adapter '{name}': {folder} has no {LoraNames.WeightsFileName} (convert a PEFT folder with build-model --lora-input)");
        var tensors = OnnxAdapterFile.Read(file);

        var ranks = new Dictionary<Pair, int>();
        var values = new Dictionary<(Pair, bool), AdapterTensor>();
        foreach (var tensor in tensors)
        {
            if (!_byInput.TryGetValue(tensor.Name, out var target))
                throw new ModelLoadException($"{file}: tensor '{tensor.Name}' is not an adapter input of {_modelPath} (was the adapter converted for another base model?)");
            var (pair, isB) = target;
            var d = tensor.Dims;
            var fits = d.Length == 3 && d[0] == 1 && (isB ? d[2] == pair.Out : d[1] == pair.In);
            if (!fits)
                throw new ModelLoadException($"{file}: tensor '{tensor.Name}' has shape [{string.Join(", ", d)}]; the graph takes {(isB ? $"[1, rank, {pair.Out}]" : $"[1, {pair.In}, rank]")}");
            var rank = (int)(isB ? d[1] : d[2]);
            if (ranks.TryGetValue(pair, out var other) && other != rank)
                throw new ModelLoadException($"{file}: '{pair.A}' has rank {(isB ? other : rank)} but '{pair.B}' has rank {(isB ? rank : other)}");
            ranks[pair] = rank;
            if (!values.TryAdd((pair, isB), tensor))
                throw new ModelLoadException($"{file}: tensor '{tensor.Name}' appears twice");
        }
        foreach (var pair in ranks.Keys)
        {
            if (!values.ContainsKey((pair, false)) || !values.ContainsKey((pair, true)))
                throw new ModelLoadException($"{file}: '{pair.A}' and '{pair.B}' must both be present");
        }

        // Grow every stack by one entry (and to a larger rank where the new adapter needs it).
        var id = _names.Count + 1;
        foreach (var pair in _pairs)
        {
            var rank = Math.Max(pair.Rank, ranks.GetValueOrDefault(pair));
            var a = Grow(pair.AStack, id, pair.Rank, rank, pair.In, pair.Out, isB: false);
            var b = Grow(pair.BStack, id, pair.Rank, rank, pair.In, pair.Out, isB: true);
            if (ranks.TryGetValue(pair, out var own))
            {
                CopyEntry(values[(pair, false)].Values, a, id, pair.In, own, rank, isB: false);
                CopyEntry(values[(pair, true)].Values, b, id, own, pair.Out, rank, isB: true);
            }
            pair.AStack?.Dispose();
            pair.BStack?.Dispose();
            (pair.AStack, pair.BStack, pair.Rank) = (a, b, rank);
        }
        _names.Add(name);
        return id;
    }

    // A stack of entries 0..lastId at the new rank, with entries 0..lastId - 1 copied from the old one.
    private static NativeBuffer? Grow(NativeBuffer? old, int lastId, int oldRank, int newRank, int inputs, int outputs, bool isB)
    {
        if (newRank == 0)
            return null;
        long entry = (long)(isB ? newRank * outputs : inputs * newRank);
        var grown = new NativeBuffer((lastId + 1) * entry * sizeof(float));
        if (old is null || oldRank == 0)
            return grown;
        var from = (float*)old.Pointer;
        var to = (float*)grown.Pointer;
        for (var id = 0; id < lastId; id++)
        {
            if (isB)
            {
                // [rank, out]: the old rows, then zero rows.
                var count = (long)oldRank * outputs;
                Buffer.MemoryCopy(from + id * count, to + id * entry, count * sizeof(float), count * sizeof(float));
            }
            else
            {
                // [in, rank]: each row keeps its old columns, then zero columns.
                for (var row = 0; row < inputs; row++)
                    Buffer.MemoryCopy(from + ((long)id * inputs + row) * oldRank, to + id * entry + (long)row * newRank, oldRank * sizeof(float), oldRank * sizeof(float));
            }
        }
        return grown;
    }

    private static void CopyEntry(float[] values, NativeBuffer? stack, int id, int rows, int columns, int stackRank, bool isB)
    {
        if (stack is null || values.Length == 0)
            return;
        var to = (float*)stack.Pointer;
        if (isB)
        {
            // [rank, out] rows are contiguous; the padding rows stay zero.
            long entry = (long)stackRank * columns;
            values.AsSpan().CopyTo(new Span<float>(to + id * entry, values.Length));
        }
        else
        {
            long entry = (long)rows * stackRank;
            for (var row = 0; row < rows; row++)
                values.AsSpan(row * columns, columns).CopyTo(new Span<float>(to + id * entry + (long)row * stackRank, columns));
        }
    }

    /// <summary>Writes the index input: the shared adapter's id, or each row's.</summary>
    public void FillIndex(ReadOnlySpan<int> adapters, AdapterUse use)
    {
        var length = use == AdapterUse.Shared ? 1 : adapters.Length;
        var index = new Span<long>((void*)_index.Pointer, length);
        for (var r = 0; r < length; r++)
            index[r] = adapters[r];
    }

    /// <summary>
    /// Binds the index input with <paramref name="indexLength"/> entries (1 for an adapter shared
    /// by every row; Gather then copies its matrices once and MatMul broadcasts them) and every stack.
    /// </summary>
    public void Bind(StepBinding binding, int indexLength)
    {
        var cpu = OrtMemoryInfo.DefaultInstance;
        binding.Input(LoraNames.AdapterIndex, OrtValue.CreateTensorValueWithData(cpu, TensorElementType.Int64, [indexLength], _index.Pointer, (long)indexLength * sizeof(long)));
        long entries = _names.Count + 1;
        foreach (var pair in _pairs)
        {
            binding.Input(pair.A, Stack(pair.AStack, [entries, pair.In, pair.Rank]));
            binding.Input(pair.B, Stack(pair.BStack, [entries, pair.Rank, pair.Out]));
        }

        OrtValue Stack(NativeBuffer? buffer, long[] shape) => buffer is null
            ? OrtValue.CreateTensorValueWithData(cpu, TensorElementType.Float, shape, _empty.Pointer, 0)
            : OrtValue.CreateTensorValueWithData(cpu, TensorElementType.Float, shape, buffer.Pointer, buffer.Bytes);
    }

    public void Dispose()
    {
        foreach (var pair in _pairs)
        {
            pair.AStack?.Dispose();
            pair.BStack?.Dispose();
        }
        _index.Dispose();
        _empty.Dispose();
    }
}
