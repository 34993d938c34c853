using InferenceServer.Model.Lora;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace InferenceServer.Model;

/// <summary>
/// Runs the dense decoder graph on the CPU provider, or on the CUDA provider
/// (<see cref="RunnerOptions.Device"/>). Owns the session and, per layer, one key and one value
/// buffer shaped [slots, kv_heads, capacity, head_dim] that are bound as both the past input and
/// the present output (GroupQueryAttention writes the new keys in place); on CUDA those buffers
/// are device memory and the step's inputs and logits travel through pinned host memory
/// (<see cref="RunnerMemory"/>).
///
/// A step runs a contiguous range of slots as the batch rows. GroupQueryAttention on the CPU
/// accepts three shapes of step, and <see cref="Step"/> takes exactly those:
///   - decode: one new token in every row, each row with its own past length;
///   - fresh prefill: several rows, none with a past, right-padded to the longest;
///   - continuation: one row with a past and several new tokens.
/// Decode steps reuse a cached IO binding per batch size, so they allocate nothing managed.
///
/// A graph built with adapter inputs (build-model --lora-targets) takes LoRA adapters
/// (<see cref="LoadAdapter"/>), and every row of a step names its own adapter, or none: rows of
/// different adapters share one run (<see cref="AdapterStacks"/>). Steps where no row has an
/// adapter bind none of the adapter inputs, and the graph's empty defaults leave the base model;
/// steps where every row has the same adapter bind a one-entry index, so the graph picks that
/// adapter's matrices once rather than once per row.
///
/// Graphs with the <see cref="LogitsToKeepInput"/> input (<see cref="HasMultiPositionLogits"/>)
/// also run <see cref="StepKeepingLogits"/>: one row, on a past or not, that gets the logits of
/// its last several new positions, as checking drafted tokens needs. It is one row because the
/// CPU kernel takes several new tokens on a past only at batch size 1.
/// </summary>
public sealed unsafe class DecoderRunner : IDecoderModel, IDisposable
{
    /// <summary>
    /// The optional graph input (an int64 scalar, 1 when left unbound) that asks for the logits of
    /// each row's last N positions instead of its last one.
    /// </summary>
    public const string LogitsToKeepInput = "logits_to_keep";

    private readonly InferenceSession _session;
    // Run-time messages from errors up: a step that keeps several positions returns logits of
    // another shape than the graph declares (one position), which ONNX Runtime would warn about
    // at every such step.
    private readonly RunOptions _runOptions = new() { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR };
    // Interruption (AllowInterrupt, Interrupt): another thread may end the run under way.
    private readonly Lock _interruptLock = new();
    private bool _interruptible, _interruptPending, _running;
    private readonly GenaiDecoderSection _decoder;
    private readonly string? _positionIdsName;
    private readonly string _attentionMaskName;
    private readonly bool _logitsPerPosition;
    private readonly bool _keepsLogits;
    private readonly TensorElementType _logitsType;
    private readonly TensorElementType _kvType;
    private readonly int _kvElementSize;
    private readonly long _slotKvElements;
    private readonly string[] _pastKeyNames, _pastValueNames, _presentKeyNames, _presentValueNames;

    private readonly RunnerMemory _memory;
    private readonly IRunnerBuffer _inputIds;
    private readonly IRunnerBuffer _attentionMask;
    private readonly IRunnerBuffer _positionIds;
    private readonly IRunnerBuffer _logits;
    private readonly NativeBuffer? _logitsFloat; // float copies of float16 logits
    private readonly IRunnerBuffer[] _keys;
    private readonly IRunnerBuffer[] _values;
    private readonly AdapterStacks? _adapters;

    // Decode bindings keyed by (first slot, batch size, how adapters are bound): fixed shapes over fixed buffers.
    private readonly Dictionary<(int First, int Batch, AdapterUse Adapters), StepBinding> _decodeBindings = [];

    // One-row steps that keep several positions' logits, keyed by (slot, new tokens, kept
    // positions). The graph declares its logits [batch, 1, vocab] (what onnxruntime-genai reads as
    // "the last position only"), and ONNX Runtime refuses an output buffer of another shape, so
    // these steps let it allocate the logits and copy them out, into a buffer that grows to the
    // most positions asked for.
    private readonly Dictionary<(int Slot, int Tokens, int Kept, AdapterUse Adapters), StepBinding> _keptBindings = [];
    private NativeBuffer? _keptLogits;
    private int _keptCapacity;
    private IRunnerBuffer? _logitsToKeep;
    private bool _disposed;

    public ModelFolder Folder { get; }
    public int Slots { get; }
    public int Capacity { get; }
    public int VocabSize { get; }
    public int LayerCount { get; }

    /// <summary>Where the graph runs.</summary>
    public RunnerDevice Device { get; }

    /// <summary>
    /// Whether the graph returns the logits of several last positions of a row
    /// (<see cref="StepKeepingLogits"/>): false for graphs without the <see cref="LogitsToKeepInput"/>
    /// input (onnxruntime-genai's builder, or ours before it had the input), where checking drafted
    /// tokens in one step is not possible.
    /// </summary>
    public bool HasMultiPositionLogits => _keepsLogits;

    /// <summary>Bytes held by the KV buffers of all layers and slots.</summary>
    public long KvCacheBytes { get; }

    public long KvBytesPerToken => 2L * LayerCount * _decoder.NumKeyValueHeads * _decoder.HeadSize * _kvElementSize;

    public DecoderRunner(ModelFolder folder, RunnerOptions options)
    {
        ArgumentNullException.ThrowIfNull(folder);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(options.MaxBatch);
        Folder = folder;
        var model = folder.Config.Model;
        _decoder = model.Decoder;
        Slots = options.MaxBatch;
        Capacity = options.MaxSequenceLength > 0 ? options.MaxSequenceLength : model.ContextLength;
        if (Capacity > model.ContextLength)
            throw new ArgumentOutOfRangeException(nameof(options), $"MaxSequenceLength {Capacity} exceeds the model's context length {model.ContextLength}");
        VocabSize = model.VocabSize;
        LayerCount = _decoder.NumHiddenLayers;
        Device = options.Device;
        if (_decoder.IsPaged)
            throw new ModelLoadException($"{folder.Path}: this folder holds the paged graph (PagedAttention), which only the CUDA provider runs; the CPU serves the dense graph (build-model --graph dense)");
        _attentionMaskName = _decoder.Inputs.AttentionMask
            ?? throw new ModelLoadException($"{folder.Path}: genai_config.json names no attention_mask input, which the dense graph needs");

        using var sessionOptions = new SessionOptions
        {
            GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
            LogId = _decoder.SessionOptions.LogId,
            // On the CPU, loading warns about nothing but logits_to_keep, an input with a default
            // ("appears in graph inputs and will not be treated as constant"), which is what it is
            // meant to be: only errors are shown. On CUDA the warnings also say which nodes fell
            // back to the CPU, so they stay.
            LogSeverityLevel = options.Device == RunnerDevice.Cpu ? OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR : OrtLoggingLevel.ORT_LOGGING_LEVEL_WARNING,
        };
        if (options.IntraOpThreads > 0)
            sessionOptions.IntraOpNumThreads = options.IntraOpThreads;
        if (_decoder.SessionOptions.LogSeverityLevel is { } severity)
            sessionOptions.LogSeverityLevel = (OrtLoggingLevel)severity;
        if (Device == RunnerDevice.Cuda)
            CudaRuntime.AppendProvider(sessionOptions, options.DeviceId);
        try
        {
            _session = new InferenceSession(folder.DecoderPath, sessionOptions);
        }
        catch (OnnxRuntimeException e)
        {
            throw new ModelLoadException($"{folder.DecoderPath}: ONNX Runtime cannot load the graph{(Device == RunnerDevice.Cuda ? " on CUDA" : "")}: {e.Message}", e);
        }
        _memory = Device == RunnerDevice.Cuda ? new CudaRunnerMemory(_session, options.DeviceId) : RunnerMemory.Cpu;

        try
        {
            _pastKeyNames = LayerNames.ForAll(_decoder.Inputs.PastKeyNames, LayerCount);
            _pastValueNames = LayerNames.ForAll(_decoder.Inputs.PastValueNames, LayerCount);
            _presentKeyNames = LayerNames.ForAll(_decoder.Outputs.PresentKeyNames, LayerCount);
            _presentValueNames = LayerNames.ForAll(_decoder.Outputs.PresentValueNames, LayerCount);
            _positionIdsName = _decoder.Inputs.PositionIds is { } p && _session.InputMetadata.ContainsKey(p) ? p : null;
            _adapters = AdapterStacks.Discover(_session.OverridableInitializerMetadata, folder.DecoderPath, Slots);
            _keepsLogits = _session.OverridableInitializerMetadata.ContainsKey(LogitsToKeepInput) || _session.InputMetadata.ContainsKey(LogitsToKeepInput);
            CheckContract(out _kvType, out _logitsType, out _logitsPerPosition);
            _kvElementSize = _kvType == TensorElementType.Float ? 4 : 2;

            _slotKvElements = (long)_decoder.NumKeyValueHeads * Capacity * _decoder.HeadSize;
            long layerBytes = Slots * _slotKvElements * _kvElementSize;
            KvCacheBytes = layerBytes * 2 * LayerCount;
            _keys = new IRunnerBuffer[LayerCount];
            _values = new IRunnerBuffer[LayerCount];
            for (var i = 0; i < LayerCount; i++)
            {
                _keys[i] = _memory.Kv(layerBytes);
                _values[i] = _memory.Kv(layerBytes);
            }
            long tokenCells = (long)Slots * Capacity;
            _inputIds = _memory.Step(tokenCells * sizeof(long));
            _attentionMask = _memory.Step(tokenCells * sizeof(long));
            _positionIds = _memory.Step(tokenCells * sizeof(long));
            _logits = _memory.Step((long)Slots * VocabSize * (_logitsType == TensorElementType.Float ? 4 : 2));
            _logitsFloat = _logitsType == TensorElementType.Float && !_logitsPerPosition ? null : new NativeBuffer((long)Slots * VocabSize * 4);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>
    /// Runs one step over slots [firstSlot, firstSlot + rows.Length). <paramref name="tokens"/>
    /// holds each row's new tokens, row after row. Returns the logits of the last new position of
    /// each row, [rows, vocab]; the span is valid until the next step.
    /// </summary>
    public ReadOnlySpan<float> Step(int firstSlot, scoped ReadOnlySpan<SequenceStep> rows, scoped ReadOnlySpan<int> tokens) =>
        Step(firstSlot, rows, tokens, []);

    /// <summary>
    /// A step in which row r runs with the adapter <paramref name="adapters"/>[r] (an id from
    /// <see cref="LoadAdapter"/>; 0 for the base model alone). An empty span means no adapter in
    /// any row.
    /// </summary>
    public ReadOnlySpan<float> Step(int firstSlot, scoped ReadOnlySpan<SequenceStep> rows, scoped ReadOnlySpan<int> tokens, scoped ReadOnlySpan<int> adapters)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var shape = Validate(firstSlot, rows, tokens);
        var withAdapters = ValidateAdapters(rows.Length, adapters);
        var batch = rows.Length;

        FillInputs(rows, tokens, shape.SequenceLength, shape.MaskWidth);
        if (withAdapters != AdapterUse.None)
            _adapters!.FillIndex(adapters, withAdapters);

        if (shape.IsDecode)
        {
            if (!_decodeBindings.TryGetValue((firstSlot, batch, withAdapters), out var binding))
            {
                binding = CreateBinding(firstSlot, batch, 1, Capacity, withAdapters);
                _decodeBindings.Add((firstSlot, batch, withAdapters), binding);
            }
            Run(binding, rows, 1);
        }
        else
        {
            using var binding = CreateBinding(firstSlot, batch, shape.SequenceLength, shape.MaskWidth, withAdapters);
            Run(binding, rows, shape.SequenceLength);
        }
        return new ReadOnlySpan<float>((float*)(_logitsFloat ?? _logits).Pointer, batch * VocabSize);
    }

    /// <summary>Whether the graph has adapter inputs, so that <see cref="LoadAdapter"/> can load adapters.</summary>
    public bool SupportsAdapters => _adapters is not null;

    /// <inheritdoc/>
    public int AdapterCount => AdapterNames.Count;

    /// <summary>The loaded adapters by name; adapter id i + 1 is entry i.</summary>
    public IReadOnlyList<string> AdapterNames => _adapters?.Names ?? [];

    /// <summary>
    /// Loads a converted adapter (a folder with <see cref="LoraNames.WeightsFileName"/>; by default
    /// the model folder's adapters/<paramref name="name"/>) and returns the id that steps name it
    /// by. Not to be called while a step runs: the adapter stacks are reallocated.
    /// </summary>
    public int LoadAdapter(string name, string? folder = null)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(name);
        if (_adapters is null)
            throw new ModelLoadException($"{Folder.DecoderPath}: the graph has no adapter inputs; build the base model with build-model --lora-targets to load adapters");
        if (Device != RunnerDevice.Cpu)
            throw new ModelLoadException("adapters run on the CPU provider only so far");
        var id = _adapters.Load(name, folder ?? Path.Combine(Folder.Path, LoraNames.AdaptersFolder, name));
        // Bindings over the old stacks are stale now.
        foreach (var key in _decodeBindings.Keys.Where(k => k.Adapters != AdapterUse.None).ToArray())
        {
            _decodeBindings[key].Dispose();
            _decodeBindings.Remove(key);
        }
        foreach (var key in _keptBindings.Keys.Where(k => k.Adapters != AdapterUse.None).ToArray())
        {
            _keptBindings[key].Dispose();
            _keptBindings.Remove(key);
        }
        return id;
    }

    /// <summary>The id of a loaded adapter; an unknown name is an <see cref="ArgumentException"/> that lists the loaded ones.</summary>
    public int AdapterId(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (_adapters is not null && _adapters.TryGetId(name, out var id))
            return id;
        var loaded = AdapterNames.Count == 0 ? "none is loaded" : $"loaded: {string.Join(", ", AdapterNames)}";
        throw new ArgumentException($"no adapter named '{name}' ({loaded})", nameof(name));
    }

    /// <summary>
    /// Runs one row in <paramref name="slot"/>: <paramref name="row"/>.TokenCount new tokens on a
    /// past of <paramref name="row"/>.PastLength (0 for a fresh prompt) and returns the logits of
    /// its last <paramref name="positions"/> new positions, oldest first, [positions, vocab]: row i
    /// is the distribution of the token after the first PastLength + TokenCount - positions + i + 1
    /// tokens. The span is valid until the next step. Bindings are cached per (slot, tokens,
    /// positions); what a step still allocates is ONNX Runtime's handles to the outputs it
    /// allocated (the logits' declared shape is that of one position, so no buffer of ours can be
    /// bound for several).
    /// </summary>
    /// <param name="adapter">The row's adapter (an id from <see cref="LoadAdapter"/>; 0: the base model).</param>
    /// <exception cref="InvalidOperationException">The graph has no <see cref="LogitsToKeepInput"/> input (<see cref="HasMultiPositionLogits"/> is false).</exception>
    public ReadOnlySpan<float> StepKeepingLogits(int slot, SequenceStep row, scoped ReadOnlySpan<int> tokens, int positions, int adapter = 0)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!_keepsLogits)
            throw new InvalidOperationException($"{Folder.DecoderPath}: the graph has no {LogitsToKeepInput} input, so a step returns each row's last logits only (build the model again, or build-model --upgrade-graph)");
        ReadOnlySpan<SequenceStep> rows = [row];
        Validate(slot, rows, tokens);
        if (positions < 1 || positions > row.TokenCount)
            throw new ArgumentOutOfRangeException(nameof(positions), positions, $"a row with {row.TokenCount} new tokens has logits for 1 to {row.TokenCount} of them");

        // The mask spans the whole slot, as in decode steps, so the shapes (and the cached binding)
        // depend only on the number of new tokens and kept positions.
        ReadOnlySpan<int> adapters = [adapter];
        var withAdapter = ValidateAdapters(1, adapters);
        FillInputs(rows, tokens, row.TokenCount, Capacity);
        if (withAdapter != AdapterUse.None)
            _adapters!.FillIndex(adapters, withAdapter);
        if (!_keptBindings.TryGetValue((slot, row.TokenCount, positions, withAdapter), out var binding))
        {
            EnsureKeptLogits(positions);
            binding = CreateBinding(slot, 1, row.TokenCount, Capacity, withAdapter, positions);
            _keptBindings.Add((slot, row.TokenCount, positions, withAdapter), binding);
        }
        *(long*)_logitsToKeep!.Pointer = positions;
        // Bound anew each time: after a run the binding holds the logits ONNX Runtime allocated,
        // which the next run would check against the declared shape.
        binding.IoBinding.BindOutputToDevice(_decoder.Outputs.Logits, _memory.StepInfo);
        RunSession(binding);
        using var outputs = binding.IoBinding.GetOutputValues();
        var logits = outputs[0]; // bound first, see CreateBinding
        var count = positions * VocabSize;
        var destination = new Span<float>((void*)_keptLogits!.Pointer, count);
        if (_logitsType == TensorElementType.Float)
            logits.GetTensorDataAsSpan<float>()[..count].CopyTo(destination);
        else
            System.Numerics.Tensors.TensorPrimitives.ConvertToSingle(System.Runtime.InteropServices.MemoryMarshal.Cast<Float16, Half>(logits.GetTensorDataAsSpan<Float16>()[..count]), destination);
        return destination;
    }

    // Logits buffers for the most kept positions asked for so far; a larger request replaces them
    // and the bindings over them.
    private void EnsureKeptLogits(int positions)
    {
        _logitsToKeep ??= _memory.Step(sizeof(long));
        if (positions <= _keptCapacity)
            return;
        foreach (var binding in _keptBindings.Values)
            binding.Dispose();
        _keptBindings.Clear();
        _keptLogits?.Dispose();
        _keptLogits = new NativeBuffer((long)positions * VocabSize * sizeof(float));
        _keptCapacity = positions;
    }

    /// <summary>
    /// Copies the first <paramref name="length"/> positions of one slot's KV to another, so a
    /// sequence can start from a prefix that another slot computed.
    /// </summary>
    public void CopyPrefix(int fromSlot, int toSlot, int length)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if ((uint)fromSlot >= (uint)Slots || (uint)toSlot >= (uint)Slots)
            throw new ArgumentOutOfRangeException(nameof(fromSlot), $"slots are 0..{Slots - 1}");
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(length, Capacity);
        if (fromSlot == toSlot || length == 0)
            return;
        // Per slot and KV head, positions are contiguous: [head][position][head_dim].
        long headBytes = (long)Capacity * _decoder.HeadSize * _kvElementSize;
        long copyBytes = (long)length * _decoder.HeadSize * _kvElementSize;
        long slotBytes = _slotKvElements * _kvElementSize;
        for (var layer = 0; layer < LayerCount; layer++)
        {
            CopyHeads(_keys[layer]);
            CopyHeads(_values[layer]);
        }

        void CopyHeads(IRunnerBuffer buffer)
        {
            for (var head = 0; head < _decoder.NumKeyValueHeads; head++)
            {
                var source = buffer.Pointer + (nint)(fromSlot * slotBytes + head * headBytes);
                var target = buffer.Pointer + (nint)(toSlot * slotBytes + head * headBytes);
                _memory.CopyKv(source, target, copyBytes);
            }
        }
    }

    private readonly record struct StepShape(int SequenceLength, int MaskWidth, bool IsDecode);

    private StepShape Validate(int firstSlot, ReadOnlySpan<SequenceStep> rows, ReadOnlySpan<int> tokens)
    {
        if (rows.IsEmpty)
            throw new ArgumentException("a step needs at least one row", nameof(rows));
        if (firstSlot < 0 || firstSlot + rows.Length > Slots)
            throw new ArgumentOutOfRangeException(nameof(firstSlot), $"rows {firstSlot}..{firstSlot + rows.Length - 1} are outside the {Slots} KV slots");
        int total = 0, longest = 0;
        bool anyPast = false;
        foreach (var row in rows)
        {
            if (row.TokenCount < 1)
                throw new ArgumentException("every row needs at least one new token", nameof(rows));
            if (row.PastLength < 0)
                throw new ArgumentException("a past length cannot be negative", nameof(rows));
            if (row.PastLength + row.TokenCount > Capacity)
                throw new ArgumentException($"a row would hold {row.PastLength + row.TokenCount} tokens; a slot holds {Capacity}", nameof(rows));
            total += row.TokenCount;
            longest = Math.Max(longest, row.TokenCount);
            anyPast |= row.PastLength > 0;
        }
        if (tokens.Length != total)
            throw new ArgumentException($"the rows announce {total} new tokens but {tokens.Length} were given", nameof(tokens));
        foreach (var token in tokens)
        {
            if ((uint)token >= (uint)VocabSize)
                throw new ArgumentOutOfRangeException(nameof(tokens), $"token id {token} is outside the vocabulary (0..{VocabSize - 1})");
        }

        if (longest == 1)
            // Every row decodes one token. The mask spans the whole slot so the shapes, and with
            // them the cached binding, stay the same from step to step; only its content says
            // how long each row is.
            return new StepShape(1, Capacity, IsDecode: Capacity > 1);
        if (rows.Length == 1)
            return new StepShape(longest, rows[0].PastLength + longest, IsDecode: false);
        if (anyPast)
            throw new ArgumentException("rows that continue a past with more than one new token must run one at a time (batch 1)", nameof(rows));
        return new StepShape(longest, longest, IsDecode: false);
    }

    // How the step's adapters are bound: not at all, one adapter for every row, or one per row.
    private AdapterUse ValidateAdapters(int rowCount, ReadOnlySpan<int> adapters)
    {
        if (adapters.IsEmpty)
            return AdapterUse.None;
        if (adapters.Length != rowCount)
            throw new ArgumentException($"{adapters.Length} adapter ids for {rowCount} rows", nameof(adapters));
        var count = _adapters?.Count ?? 0;
        var same = true;
        foreach (var id in adapters)
        {
            if ((uint)id > (uint)count)
                throw new ArgumentOutOfRangeException(nameof(adapters), $"adapter id {id} is not loaded (ids 1..{count}; 0 is the base model)");
            same &= id == adapters[0];
        }
        return !same ? AdapterUse.PerRow : adapters[0] == 0 ? AdapterUse.None : AdapterUse.Shared;
    }

    private void FillInputs(ReadOnlySpan<SequenceStep> rows, ReadOnlySpan<int> tokens, int sequenceLength, int maskWidth)
    {
        var ids = new Span<long>((void*)_inputIds.Pointer, rows.Length * sequenceLength);
        var mask = new Span<long>((void*)_attentionMask.Pointer, rows.Length * maskWidth);
        var positions = new Span<long>((void*)_positionIds.Pointer, rows.Length * sequenceLength);
        var padId = Folder.Config.Model.PadTokenId is [var pad, ..] && (uint)pad < (uint)VocabSize ? pad : 0;
        var next = 0;
        for (var r = 0; r < rows.Length; r++)
        {
            var row = rows[r];
            var rowIds = ids.Slice(r * sequenceLength, sequenceLength);
            for (var t = 0; t < row.TokenCount; t++)
                rowIds[t] = tokens[next + t];
            rowIds[row.TokenCount..].Fill(padId);
            next += row.TokenCount;

            // Right padding: ones for every token the row holds after this step.
            var rowMask = mask.Slice(r * maskWidth, maskWidth);
            var length = row.PastLength + row.TokenCount;
            rowMask[..length].Fill(1);
            rowMask[length..].Clear();

            if (_positionIdsName is not null)
            {
                var rowPositions = positions.Slice(r * sequenceLength, sequenceLength);
                for (var t = 0; t < sequenceLength; t++)
                    rowPositions[t] = row.PastLength + Math.Min(t, row.TokenCount - 1);
            }
        }
    }

    private void Run(StepBinding binding, ReadOnlySpan<SequenceStep> rows, int sequenceLength)
    {
        RunSession(binding);
        if (_logitsPerPosition)
            CopyLastPositionLogits(binding, rows, sequenceLength);
        else if (_logitsType == TensorElementType.Float16)
            HalfToFloat(_logits.Pointer, _logitsFloat!.Pointer, rows.Length * VocabSize);
    }

    private void RunSession(StepBinding binding)
    {
        // Only the thread that runs steps allows interruption, so while it has not, no other
        // thread touches the terminate flag and a run takes no lock.
        var interruptible = _interruptible;
        if (interruptible)
            BeginInterruptibleRun();
        try
        {
            _session.RunWithBinding(_runOptions, binding.IoBinding);
            _memory.Synchronize(binding.IoBinding);
        }
        catch (OnnxRuntimeException e) when (interruptible && TakeInterruption())
        {
            throw new StepInterruptedException("the step was interrupted", e);
        }
        catch (OnnxRuntimeException e)
        {
            throw new InvalidOperationException($"the decoder step failed: {e.Message}", e);
        }
        finally
        {
            if (interruptible)
                EndInterruptibleRun();
        }
    }

    // An interruption asked for before the run ends it here; otherwise Interrupt may now set the terminate flag.
    private void BeginInterruptibleRun()
    {
        lock (_interruptLock)
        {
            if (_interruptPending)
            {
                _interruptPending = false;
                throw new StepInterruptedException();
            }
            _running = true;
        }
    }

    private void EndInterruptibleRun()
    {
        lock (_interruptLock)
        {
            _running = false;
            if (_interruptPending)
            {
                // Asked for as the run ended on its own: its results stand, and the flag must not
                // end the next run.
                _interruptPending = false;
                _runOptions.Terminate = false;
            }
        }
    }

    // A run that failed after Interrupt set the terminate flag: clear it for the next run.
    private bool TakeInterruption()
    {
        lock (_interruptLock)
        {
            if (!_interruptPending)
                return false;
            _interruptPending = false;
            _runOptions.Terminate = false;
            return true;
        }
    }

    /// <inheritdoc/>
    public bool CanInterrupt => true;

    /// <inheritdoc/>
    public void AllowInterrupt(bool allowed)
    {
        // Called between runs by the thread that runs them, so no terminate flag is set now (a run
        // clears it as it ends); only an interruption waiting for the next run is forgotten.
        lock (_interruptLock)
        {
            _interruptible = allowed;
            if (!allowed)
                _interruptPending = false;
        }
    }

    /// <summary>
    /// Any thread: ends the run under way at ONNX Runtime's next node boundary (its terminate
    /// flag), or the next run before it starts, if interruption is allowed.
    /// </summary>
    public void Interrupt()
    {
        lock (_interruptLock)
        {
            if (!_interruptible || _interruptPending || _disposed)
                return;
            _interruptPending = true;
            if (_running)
                _runOptions.Terminate = true;
        }
    }

    // Graphs from onnxruntime-genai's builder return logits for every position: keep each row's last.
    private void CopyLastPositionLogits(StepBinding binding, ReadOnlySpan<SequenceStep> rows, int sequenceLength)
    {
        using var outputs = binding.IoBinding.GetOutputValues();
        var logits = outputs[0]; // bound first, see CreateBinding
        for (var r = 0; r < rows.Length; r++)
        {
            long offset = ((long)r * sequenceLength + rows[r].TokenCount - 1) * VocabSize;
            var destination = (nint)((float*)_logitsFloat!.Pointer + (long)r * VocabSize);
            if (_logitsType == TensorElementType.Float)
                logits.GetTensorDataAsSpan<float>().Slice((int)offset, VocabSize).CopyTo(new Span<float>((void*)destination, VocabSize));
            else
                fixed (Float16* source = logits.GetTensorDataAsSpan<Float16>().Slice((int)offset, VocabSize))
                    HalfToFloat((nint)source, destination, VocabSize);
        }
    }

    private static void HalfToFloat(nint source, nint destination, int count)
    {
        var from = new ReadOnlySpan<Half>((void*)source, count);
        var to = new Span<float>((void*)destination, count);
        System.Numerics.Tensors.TensorPrimitives.ConvertToSingle(from, to);
    }

    // keptPositions > 0: one row's last positions into the kept logits buffer, with logits_to_keep bound.
    private StepBinding CreateBinding(int firstSlot, int batch, int sequenceLength, int maskWidth, AdapterUse adapters, int keptPositions = 0)
    {
        var binding = new StepBinding(_session.CreateIoBinding());
        try
        {
            var mem = _memory.StepInfo;
            // Logits are bound before the KV outputs: bound outputs come back in binding order,
            // and graphs with logits for every position are read through that list.
            if (keptPositions > 0)
            {
                binding.IoBinding.BindOutputToDevice(_decoder.Outputs.Logits, mem);
                binding.Input(LogitsToKeepInput, OrtValue.CreateTensorValueWithData(mem, TensorElementType.Int64, [], _logitsToKeep!.Pointer, _logitsToKeep.Bytes));
            }
            else if (_logitsPerPosition)
                binding.IoBinding.BindOutputToDevice(_decoder.Outputs.Logits, mem);
            else
                binding.Output(_decoder.Outputs.Logits, OrtValue.CreateTensorValueWithData(mem, _logitsType, [batch, 1, VocabSize], _logits.Pointer, _logits.Bytes));

            long[] tokenShape = [batch, sequenceLength];
            binding.Input(_decoder.Inputs.InputIds, OrtValue.CreateTensorValueWithData(mem, TensorElementType.Int64, tokenShape, _inputIds.Pointer, _inputIds.Bytes));
            binding.Input(_attentionMaskName, OrtValue.CreateTensorValueWithData(mem, TensorElementType.Int64, [batch, maskWidth], _attentionMask.Pointer, _attentionMask.Bytes));
            if (_positionIdsName is not null)
                binding.Input(_positionIdsName, OrtValue.CreateTensorValueWithData(mem, TensorElementType.Int64, tokenShape, _positionIds.Pointer, _positionIds.Bytes));

            long[] kvShape = [batch, _decoder.NumKeyValueHeads, Capacity, _decoder.HeadSize];
            long offsetBytes = firstSlot * _slotKvElements * _kvElementSize;
            long viewBytes = batch * _slotKvElements * _kvElementSize;
            for (var layer = 0; layer < LayerCount; layer++)
            {
                var key = OrtValue.CreateTensorValueWithData(_memory.KvInfo, _kvType, kvShape, _keys[layer].Pointer + (nint)offsetBytes, viewBytes);
                binding.Input(_pastKeyNames[layer], key);
                binding.Output(_presentKeyNames[layer], key);
                var value = OrtValue.CreateTensorValueWithData(_memory.KvInfo, _kvType, kvShape, _values[layer].Pointer + (nint)offsetBytes, viewBytes);
                binding.Input(_pastValueNames[layer], value);
                binding.Output(_presentValueNames[layer], value);
            }
            if (adapters != AdapterUse.None)
                _adapters!.Bind(binding, adapters == AdapterUse.Shared ? 1 : batch);
            return binding;
        }
        catch
        {
            binding.Dispose();
            throw;
        }
    }

    // The session must have the inputs and outputs genai_config.json names, with the element
    // types this runner feeds; a mismatch is reported here rather than at the first step.
    private void CheckContract(out TensorElementType kvType, out TensorElementType logitsType, out bool logitsPerPosition)
    {
        var inputs = _session.InputMetadata;
        var outputs = _session.OutputMetadata;
        var path = Folder.DecoderPath;

        NodeMetadata Need(IReadOnlyDictionary<string, NodeMetadata> map, string name, string kind) =>
            map.TryGetValue(name, out var meta) ? meta : throw new ModelLoadException($"{path}: the graph has no {kind} '{name}' (genai_config.json names it)");

        foreach (var name in new[] { _decoder.Inputs.InputIds, _attentionMaskName })
        {
            var meta = Need(inputs, name, "input");
            if (meta.ElementDataType != TensorElementType.Int64)
                throw new ModelLoadException($"{path}: input '{name}' is {meta.ElementDataType}; this runner feeds int64");
        }
        var known = new HashSet<string>(StringComparer.Ordinal) { _decoder.Inputs.InputIds, _attentionMaskName, LogitsToKeepInput };
        if (_positionIdsName is not null)
            known.Add(_positionIdsName);

        kvType = Need(inputs, _pastKeyNames[0], "input").ElementDataType;
        if (kvType is not (TensorElementType.Float or TensorElementType.Float16))
            throw new ModelLoadException($"{path}: KV cache type {kvType} is not supported (float or float16)");
        for (var i = 0; i < LayerCount; i++)
        {
            foreach (var (names, map, kind) in new[] { (_pastKeyNames, inputs, "input"), (_pastValueNames, inputs, "input"), (_presentKeyNames, outputs, "output"), (_presentValueNames, outputs, "output") })
            {
                var meta = Need(map, names[i], kind);
                if (meta.ElementDataType != kvType)
                    throw new ModelLoadException($"{path}: {kind} '{names[i]}' is {meta.ElementDataType}, other KV tensors are {kvType}");
                var dims = meta.Dimensions;
                if (dims.Length != 4 || (dims[1] > 0 && dims[1] != _decoder.NumKeyValueHeads) || (dims[3] > 0 && dims[3] != _decoder.HeadSize))
                    throw new ModelLoadException($"{path}: {kind} '{names[i]}' has shape [{string.Join(", ", dims)}]; expected [batch, {_decoder.NumKeyValueHeads}, length, {_decoder.HeadSize}]");
            }
            known.Add(_pastKeyNames[i]);
            known.Add(_pastValueNames[i]);
        }
        foreach (var name in inputs.Keys)
        {
            if (!known.Contains(name) && _adapters?.IsAdapterInput(name) != true)
                throw new ModelLoadException($"{path}: the graph has an input '{name}' that genai_config.json does not describe");
        }

        var logits = Need(outputs, _decoder.Outputs.Logits, "output");
        logitsType = logits.ElementDataType;
        if (logitsType is not (TensorElementType.Float or TensorElementType.Float16))
            throw new ModelLoadException($"{path}: logits type {logitsType} is not supported (float or float16)");
        var logitDims = logits.Dimensions;
        if (logitDims.Length != 3 || (logitDims[2] > 0 && logitDims[2] != VocabSize))
            throw new ModelLoadException($"{path}: logits have shape [{string.Join(", ", logitDims)}]; expected [batch, positions, {VocabSize}]");
        // Our graphs gather the last position of each row (dimension 1 is fixed at 1, or set by
        // logits_to_keep); graphs that return every position have a symbolic dimension there.
        logitsPerPosition = !_keepsLogits && logitDims[1] != 1;
    }

    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        foreach (var binding in _decodeBindings.Values)
            binding.Dispose();
        _decodeBindings.Clear();
        foreach (var binding in _keptBindings.Values)
            binding.Dispose();
        _keptBindings.Clear();
        _keptLogits?.Dispose();
        _logitsToKeep?.Dispose();
        // Buffers from the session's allocators go before the session.
        foreach (var buffer in (IRunnerBuffer?[]?)_keys ?? [])
            buffer?.Dispose();
        foreach (var buffer in (IRunnerBuffer?[]?)_values ?? [])
            buffer?.Dispose();
        _inputIds?.Dispose();
        _attentionMask?.Dispose();
        _positionIds?.Dispose();
        _logitsFloat?.Dispose();
        _logits?.Dispose();
        _adapters?.Dispose();
        _memory?.Dispose();
        _session?.Dispose();
        _runOptions.Dispose();
    }
}
