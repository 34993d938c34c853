using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace InferenceServer.Model;

/// <summary>
/// Runs the paged decoder graph on ONNX Runtime's CUDA provider: one run per engine iteration
/// for any mix of prefill chunks and decodes. The KV pools (one key and one value pool per
/// layer, [blocks, block_tokens, kv_heads, head_dim]) live on the device, allocated once and
/// bound as both the input and the aliased output of every step, so PagedAttention writes new
/// keys in place. The step's metadata (packed token ids, sequence boundaries, past lengths,
/// block table) is written into pinned host buffers that the provider copies in; what comes back
/// is the graph's reduced sampling outputs (argmax, top-k, logsumexp), or the whole logits rows
/// when a sampler needs them. Block tables come from the caller's KV manager: block ids index
/// the pools' first axis.
/// </summary>
public sealed unsafe class PagedCudaRunner : IPagedModel, IDisposable
{
    private readonly InferenceSession _session;
    private readonly RunOptions _runOptions = new();
    private readonly OrtValue _metadataValue;
    // Bindings of decode steps (one token per sequence), kept per shape: a decode step, which
    // comes once per generated token, then creates nothing. Other shapes get a binding per step.
    private readonly Dictionary<(int Batch, int Width, bool Logits), StepBinding> _decodeBindings = [];
    private readonly GenaiDecoderSection _decoder;
    private readonly OrtMemoryInfo _pinnedInfo;
    private readonly OrtMemoryInfo _cudaInfo;
    private readonly OrtAllocator _deviceAllocator;
    private readonly OrtAllocator _pinnedAllocator;
    private readonly List<OrtValue> _owned = [];
    private readonly OrtValue[] _keyPools, _valuePools;
    private readonly string _inputIds, _cumulative, _past, _blockTable, _metadata;
    private readonly string _nextToken, _topLogits, _topIds, _logSumExp, _logits;

    // Pinned host buffers, sized for the largest step; each step binds views of its own shape.
    private readonly PinnedBuffers _pinned;
    private readonly nint _metadataValues;
    private bool _disposed;

    public ModelFolder Folder { get; }
    public int VocabSize { get; }
    public int LayerCount { get; }
    public int BlockTokens { get; }
    public int KvBlocks { get; }
    public int MaxBlocksPerSequence { get; }
    public int MaxSequences { get; }
    public int MaxStepTokens { get; }
    public int Capacity { get; }

    /// <summary>How many largest logits per sequence the graph returns.</summary>
    public int TopK { get; }

    public TensorElementType KvElementType { get; }

    /// <summary>How the aliased pool outputs are bound: the first way the warm-up step ran with.</summary>
    public KvOutputBinding KvOutputBinding { get; private set; }
    public long KvBytesPerToken { get; }

    public PagedCudaRunner(ModelFolder folder, PagedRunnerOptions options)
    {
        ArgumentNullException.ThrowIfNull(folder);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(options.BlockTokens);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(options.MaxSequences);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(options.MaxStepTokens);
        Folder = folder;
        var model = folder.Config.Model;
        _decoder = model.Decoder;
        if (!_decoder.IsPaged)
            throw new ModelLoadException($"{folder.Path}: the CUDA runner needs the paged graph; build it with build-model --graph paged --precision fp16 (or bf16)");
        VocabSize = model.VocabSize;
        LayerCount = _decoder.NumHiddenLayers;
        BlockTokens = options.BlockTokens;
        Capacity = options.MaxSequenceLength > 0 ? Math.Min(options.MaxSequenceLength, model.ContextLength) : model.ContextLength;
        MaxBlocksPerSequence = (Capacity + BlockTokens - 1) / BlockTokens;
        MaxSequences = options.MaxSequences;
        MaxStepTokens = Math.Max(options.MaxStepTokens, options.MaxSequences);
        var inputs = _decoder.Inputs;
        var outputs = _decoder.Outputs;
        _inputIds = inputs.InputIds;
        _cumulative = inputs.CumulativeSequenceLength!;
        _past = inputs.PastSequenceLengths ?? throw Missing(folder, "past_sequence_lengths");
        _blockTable = inputs.BlockTable!;
        _metadata = inputs.AttentionMetadata ?? throw Missing(folder, "attention_metadata");
        _nextToken = outputs.NextToken ?? throw Missing(folder, "next_token");
        _topLogits = outputs.TopLogits ?? throw Missing(folder, "top_logits");
        _topIds = outputs.TopIds ?? throw Missing(folder, "top_ids");
        _logSumExp = outputs.LogSumExp ?? throw Missing(folder, "logsumexp");
        _logits = outputs.Logits;

        _session = CreateSession(folder, options.DeviceId);
        try
        {
            var kvInput = LayerNames.For(inputs.PastKeyNames, 0);
            KvElementType = _session.InputMetadata.TryGetValue(kvInput, out var kvMeta)
                ? kvMeta.ElementDataType
                : throw Missing(folder, kvInput);
            var kvElementSize = KvElementType is TensorElementType.Float16 or TensorElementType.BFloat16 ? 2 : 4;
            long blockBytes = (long)BlockTokens * _decoder.NumKeyValueHeads * _decoder.HeadSize * kvElementSize;
            KvBytesPerToken = 2L * LayerCount * _decoder.NumKeyValueHeads * _decoder.HeadSize * kvElementSize;
            TopK = (int)_session.OutputMetadata[_topLogits].Dimensions[^1];

            _cudaInfo = new OrtMemoryInfo(OrtMemoryInfo.allocatorCUDA, OrtAllocatorType.DeviceAllocator, options.DeviceId, OrtMemType.Default);
            _pinnedInfo = new OrtMemoryInfo(OrtMemoryInfo.allocatorCUDA_PINNED, OrtAllocatorType.DeviceAllocator, options.DeviceId, OrtMemType.CpuOutput);
            _deviceAllocator = new OrtAllocator(_session, _cudaInfo);
            _pinnedAllocator = new OrtAllocator(_session, _pinnedInfo);

            KvBlocks = PoolBlocks(options, blockBytes);
            if (KvBlocks < MaxBlocksPerSequence)
                throw new ModelLoadException($"{folder.Path}: the KV pool holds {KvBlocks} blocks of {BlockTokens} tokens, less than one sequence of {Capacity} tokens needs");
            AllocatePools(out _keyPools, out _valuePools);
            _pinned = AllocatePinnedBuffers();
            // attention_metadata is read on the host by the kernel: plain CPU memory.
            _metadataValue = Own(OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, TensorElementType.Int32, [2]));
            _metadataValues = (nint)Unsafe.AsPointer(ref MemoryMarshal.GetReference(_metadataValue.GetTensorMutableRawData()));
            ChooseKvOutputBinding();
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    private static InferenceSession CreateSession(ModelFolder folder, int deviceId)
    {
        using var sessionOptions = new SessionOptions
        {
            GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
            LogId = folder.Config.Model.Decoder.SessionOptions.LogId,
        };
        CudaRuntime.AppendProvider(sessionOptions, deviceId);
        try
        {
            return new InferenceSession(folder.DecoderPath, sessionOptions);
        }
        catch (OnnxRuntimeException e)
        {
            throw new ModelLoadException($"{folder.DecoderPath}: ONNX Runtime cannot load the graph on CUDA: {e.Message}", e);
        }
    }

    // Blocks per layer pool: as many as asked for, or as fit in the bytes or the share of free
    // device memory asked for.
    private int PoolBlocks(PagedRunnerOptions options, long blockBytes) =>
        options.KvBlocks > 0 ? options.KvBlocks
        : options.KvBytes > 0 ? (int)Math.Min(options.KvBytes / (2 * LayerCount * blockBytes), int.MaxValue)
        : BlocksThatFit(options, blockBytes);

    // A key and a value pool per layer on the device, [blocks, block_tokens, kv_heads, head_dim].
    private void AllocatePools(out OrtValue[] keyPools, out OrtValue[] valuePools)
    {
        keyPools = new OrtValue[LayerCount];
        valuePools = new OrtValue[LayerCount];
        long[] poolShape = [KvBlocks, BlockTokens, _decoder.NumKeyValueHeads, _decoder.HeadSize];
        for (var layer = 0; layer < LayerCount; layer++)
        {
            keyPools[layer] = Own(OrtValue.CreateAllocatedTensorValue(_deviceAllocator, KvElementType, poolShape));
            valuePools[layer] = Own(OrtValue.CreateAllocatedTensorValue(_deviceAllocator, KvElementType, poolShape));
        }
    }

    private PinnedBuffers AllocatePinnedBuffers() => new(
        Ids: Pinned(TensorElementType.Int64, MaxStepTokens),
        CumulativeLengths: Pinned(TensorElementType.Int32, MaxSequences + 1),
        PastLengths: Pinned(TensorElementType.Int32, MaxSequences),
        Table: Pinned(TensorElementType.Int32, (long)MaxSequences * MaxBlocksPerSequence),
        NextTokens: Pinned(TensorElementType.Int64, MaxSequences),
        TopLogits: Pinned(TensorElementType.Float, (long)MaxSequences * TopK),
        TopIds: Pinned(TensorElementType.Int64, (long)MaxSequences * TopK),
        LogSumExps: Pinned(TensorElementType.Float, MaxSequences),
        LogitRows: Pinned(TensorElementType.Float, (long)MaxSequences * VocabSize));

    /// <summary>
    /// Runs one step. <paramref name="tokens"/> holds each row's new tokens, row after row;
    /// <paramref name="blockTable"/> holds each row's block ids, <paramref name="tableWidth"/> per
    /// row (the first ceil((past + new) / block_tokens) of each row are read). With
    /// <paramref name="withLogits"/> the whole logits row of each sequence's last token is copied
    /// back as well.
    /// </summary>
    public PagedStepResult Step(scoped ReadOnlySpan<SequenceStep> rows, scoped ReadOnlySpan<int> tokens, scoped ReadOnlySpan<int> blockTable, int tableWidth, bool withLogits = false)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var batch = rows.Length;
        if (batch == 0 || batch > MaxSequences)
            throw new ArgumentOutOfRangeException(nameof(rows), $"a step carries 1 to {MaxSequences} sequences, not {batch}");
        if (tokens.Length == 0 || tokens.Length > MaxStepTokens)
            throw new ArgumentOutOfRangeException(nameof(tokens), $"a step carries 1 to {MaxStepTokens} tokens, not {tokens.Length}");
        if (tableWidth <= 0 || tableWidth > MaxBlocksPerSequence || blockTable.Length != batch * tableWidth)
            throw new ArgumentOutOfRangeException(nameof(blockTable), $"the block table must be {batch} rows of 1 to {MaxBlocksPerSequence} blocks");

        var ids = new Span<long>((void*)_pinned.Ids, tokens.Length);
        var cumulative = new Span<int>((void*)_pinned.CumulativeLengths, batch + 1);
        var past = new Span<int>((void*)_pinned.PastLengths, batch);
        int total = 0, longestQuery = 0, longestKv = 0;
        cumulative[0] = 0;
        for (var i = 0; i < batch; i++)
        {
            var row = rows[i];
            var length = row.PastLength + row.TokenCount;
            if (row.TokenCount <= 0 || row.PastLength < 0 || length > Capacity || (length + BlockTokens - 1) / BlockTokens > tableWidth)
                throw new ArgumentOutOfRangeException(nameof(rows), $"row {i}: {row.PastLength} past + {row.TokenCount} new tokens does not fit its {tableWidth} blocks or the capacity {Capacity}");
            total += row.TokenCount;
            cumulative[i + 1] = total;
            past[i] = row.PastLength;
            longestQuery = Math.Max(longestQuery, row.TokenCount);
            longestKv = Math.Max(longestKv, length);
        }
        if (total != tokens.Length)
            throw new ArgumentException($"the rows add up to {total} new tokens; {tokens.Length} were given", nameof(tokens));
        for (var i = 0; i < tokens.Length; i++)
            ids[i] = tokens[i];
        foreach (var block in blockTable)
        {
            if ((uint)block >= (uint)KvBlocks)
                throw new ArgumentOutOfRangeException(nameof(blockTable), $"block {block} is outside the pool of {KvBlocks}");
        }
        blockTable.CopyTo(new Span<int>((void*)_pinned.Table, blockTable.Length));
        var metadata = new Span<int>((void*)_metadataValues, 2);
        metadata[0] = longestQuery;
        metadata[1] = longestKv;

        var decode = tokens.Length == batch;
        StepBinding? oneOff = null;
        if (!decode || !_decodeBindings.TryGetValue((batch, tableWidth, withLogits), out var binding))
        {
            binding = CreateBinding(tokens.Length, batch, tableWidth, withLogits);
            if (decode)
                _decodeBindings.Add((batch, tableWidth, withLogits), binding);
            else
                oneOff = binding;
        }
        try
        {
            _session.RunWithBinding(_runOptions, binding.IoBinding);
            binding.IoBinding.SynchronizeBoundOutputs();
        }
        finally
        {
            oneOff?.Dispose();
        }

        return new PagedStepResult(
            new ReadOnlySpan<long>((void*)_pinned.NextTokens, batch),
            new ReadOnlySpan<float>((void*)_pinned.TopLogits, batch * TopK),
            new ReadOnlySpan<long>((void*)_pinned.TopIds, batch * TopK),
            new ReadOnlySpan<float>((void*)_pinned.LogSumExps, batch),
            withLogits ? new ReadOnlySpan<float>((void*)_pinned.LogitRows, batch * VocabSize) : default,
            TopK);
    }

    // One token of one sequence in block 0, with each way of binding the pool outputs until one
    // runs. What it writes is at position 0 of block 0, which a sequence given that block writes
    // again before reading.
    private void ChooseKvOutputBinding()
    {
        var failures = new List<string>();
        foreach (var way in Enum.GetValues<KvOutputBinding>())
        {
            KvOutputBinding = way;
            try
            {
                Step([new SequenceStep(0, 1)], [0], new int[MaxBlocksPerSequence], MaxBlocksPerSequence);
                return;
            }
            catch (OnnxRuntimeException e)
            {
                failures.Add($"{way}: {e.Message}");
                foreach (var binding in _decodeBindings.Values)
                    binding.Dispose();
                _decodeBindings.Clear();
            }
        }
        throw new ModelLoadException($"{Folder.Path}: no way of binding the KV pools' outputs runs on this ONNX Runtime: {string.Join("; ", failures)}");
    }

    // A binding for one step shape: the pools and the metadata (owned by the runner) and views of
    // that shape over the pinned buffers (owned by the binding). Unbound, the whole logits stay on
    // the device: they are computed for the reductions anyway.
    private StepBinding CreateBinding(int tokenCount, int batch, int tableWidth, bool withLogits)
    {
        var binding = new StepBinding(_session.CreateIoBinding());
        try
        {
            var io = binding.IoBinding;
            for (var layer = 0; layer < LayerCount; layer++)
            {
                io.BindInput(LayerNames.For(_decoder.Inputs.PastKeyNames, layer), _keyPools[layer]);
                io.BindInput(LayerNames.For(_decoder.Inputs.PastValueNames, layer), _valuePools[layer]);
                BindPoolOutput(io, LayerNames.For(_decoder.Outputs.PresentKeyNames, layer), _keyPools[layer]);
                BindPoolOutput(io, LayerNames.For(_decoder.Outputs.PresentValueNames, layer), _valuePools[layer]);
            }
            io.BindInput(_metadata, _metadataValue);
            binding.Input(_inputIds, View(TensorElementType.Int64, [tokenCount], _pinned.Ids));
            binding.Input(_cumulative, View(TensorElementType.Int32, [batch + 1], _pinned.CumulativeLengths));
            binding.Input(_past, View(TensorElementType.Int32, [batch], _pinned.PastLengths));
            binding.Input(_blockTable, View(TensorElementType.Int32, [batch, tableWidth], _pinned.Table));
            binding.Output(_nextToken, View(TensorElementType.Int64, [batch], _pinned.NextTokens));
            binding.Output(_topLogits, View(TensorElementType.Float, [batch, TopK], _pinned.TopLogits));
            binding.Output(_topIds, View(TensorElementType.Int64, [batch, TopK], _pinned.TopIds));
            binding.Output(_logSumExp, View(TensorElementType.Float, [batch], _pinned.LogSumExps));
            if (withLogits)
                binding.Output(_logits, View(TensorElementType.Float, [batch, VocabSize], _pinned.LogitRows));
            return binding;
        }
        catch
        {
            binding.Dispose();
            throw;
        }
    }

    private void BindPoolOutput(OrtIoBinding io, string name, OrtValue pool)
    {
        switch (KvOutputBinding)
        {
            case KvOutputBinding.Pool:
                io.BindOutput(name, pool);
                break;
            case KvOutputBinding.Device:
                io.BindOutputToDevice(name, _cudaInfo);
                break;
            default:
                break; // left to the kernel, whose output aliases the pool it was given
        }
    }

    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        foreach (var binding in _decodeBindings.Values)
            binding.Dispose();
        for (var i = _owned.Count - 1; i >= 0; i--)
            _owned[i].Dispose();
        _pinnedAllocator?.Dispose();
        _deviceAllocator?.Dispose();
        _pinnedInfo?.Dispose();
        _cudaInfo?.Dispose();
        _runOptions.Dispose();
        _session?.Dispose();
    }

    private int BlocksThatFit(PagedRunnerOptions options, long blockBytes)
    {
        if (options.KvMemoryFraction is <= 0 or > 1)
            throw new ArgumentOutOfRangeException(nameof(options), $"KvMemoryFraction must be in (0, 1], not {options.KvMemoryFraction}");
        var free = CudaRuntime.FreeBytes(options.DeviceId);
        // A key and a value pool per layer.
        var blocks = (long)(free * options.KvMemoryFraction) / (2 * LayerCount * blockBytes);
        return (int)Math.Min(blocks, int.MaxValue);
    }

    private OrtValue Own(OrtValue value)
    {
        _owned.Add(value);
        return value;
    }

    private nint Pinned(TensorElementType type, long elements)
    {
        var value = Own(OrtValue.CreateAllocatedTensorValue(_pinnedAllocator, type, [elements]));
        return (nint)Unsafe.AsPointer(ref MemoryMarshal.GetReference(value.GetTensorMutableRawData()));
    }

    private OrtValue View(TensorElementType type, long[] shape, nint pointer)
    {
        long elements = 1;
        foreach (var d in shape)
            elements *= d;
        var size = type is TensorElementType.Int64 ? 8 : 4;
        return OrtValue.CreateTensorValueWithData(_pinnedInfo, type, shape, pointer, elements * size);
    }

    // Where the step's inputs and outputs live on the host: pinned memory the provider copies from and to.
    private readonly record struct PinnedBuffers(
        nint Ids, nint CumulativeLengths, nint PastLengths, nint Table,
        nint NextTokens, nint TopLogits, nint TopIds, nint LogSumExps, nint LogitRows);

    private static ModelLoadException Missing(ModelFolder folder, string name) =>
        new($"{folder.Path}: genai_config.json or the graph lacks '{name}', which the paged contract has");
}
