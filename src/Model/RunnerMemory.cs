using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;

namespace InferenceServer.Model;

/// <summary>A buffer that ORT tensors are created over: it never moves while the runner lives.</summary>
internal interface IRunnerBuffer : IDisposable
{
    nint Pointer { get; }
    long Bytes { get; }
}

/// <summary>
/// Where a dense runner's buffers live and how they are bound. On the CPU everything is plain
/// host memory. On CUDA the KV buffers are device memory, allocated once by the session's own
/// allocator (so ORT sees them exactly where its kernels write), and the step buffers (token ids,
/// mask, positions, logits) are pinned host memory that ORT copies to and from the device.
/// </summary>
internal abstract class RunnerMemory : IDisposable
{
    /// <summary>Where the step buffers are, for binding them.</summary>
    public abstract OrtMemoryInfo StepInfo { get; }

    /// <summary>Where the KV buffers are, for binding them.</summary>
    public abstract OrtMemoryInfo KvInfo { get; }

    /// <summary>Zeroed memory the host writes and reads.</summary>
    public abstract IRunnerBuffer Step(long bytes);

    public abstract IRunnerBuffer Kv(long bytes);

    /// <summary>Copies within the KV buffers (from one slot to another).</summary>
    public abstract void CopyKv(nint source, nint destination, long bytes);

    /// <summary>After a run: waits until the outputs are in the step buffers.</summary>
    public abstract void Synchronize(OrtIoBinding binding);

    public abstract void Dispose();

    public static RunnerMemory Cpu { get; } = new CpuMemory();

    private sealed unsafe class CpuMemory : RunnerMemory
    {
        public override OrtMemoryInfo StepInfo => OrtMemoryInfo.DefaultInstance;
        public override OrtMemoryInfo KvInfo => OrtMemoryInfo.DefaultInstance;
        public override IRunnerBuffer Step(long bytes) => new NativeBuffer(bytes);
        public override IRunnerBuffer Kv(long bytes) => new NativeBuffer(bytes);
        public override void CopyKv(nint source, nint destination, long bytes) => Buffer.MemoryCopy((void*)source, (void*)destination, bytes, bytes);

        public override void Synchronize(OrtIoBinding binding)
        {
            // The CPU provider has written the outputs when the run returns.
        }

        public override void Dispose()
        {
            // Nothing shared to free: each buffer frees itself.
        }
    }
}

/// <summary>The CUDA provider's side of <see cref="RunnerMemory"/> for one session and device.</summary>
internal sealed unsafe class CudaRunnerMemory : RunnerMemory
{
    private readonly OrtAllocator _device;
    private readonly OrtAllocator _pinned;
    private readonly OrtMemoryInfo _deviceInfo;
    private readonly OrtMemoryInfo _pinnedInfo;

    public CudaRunnerMemory(InferenceSession session, int deviceId)
    {
        _deviceInfo = new OrtMemoryInfo(OrtMemoryInfo.allocatorCUDA, OrtAllocatorType.DeviceAllocator, deviceId, OrtMemType.Default);
        _pinnedInfo = new OrtMemoryInfo(OrtMemoryInfo.allocatorCUDA_PINNED, OrtAllocatorType.DeviceAllocator, deviceId, OrtMemType.CpuOutput);
        _device = new OrtAllocator(session, _deviceInfo);
        _pinned = new OrtAllocator(session, _pinnedInfo);
    }

    public override OrtMemoryInfo StepInfo => _pinnedInfo;
    public override OrtMemoryInfo KvInfo => _deviceInfo;

    public override IRunnerBuffer Step(long bytes)
    {
        var buffer = new AllocatedBuffer(_pinned, bytes);
        NativeMemory.Clear((void*)buffer.Pointer, (nuint)bytes); // pinned memory is host memory
        return buffer;
    }

    // Device memory is not cleared: a row's mask and past length keep kernels from reading what
    // no step has written.
    public override IRunnerBuffer Kv(long bytes) => new AllocatedBuffer(_device, bytes);

    public override void CopyKv(nint source, nint destination, long bytes) => CudaRuntime.CopyOnDevice(source, destination, bytes);

    public override void Synchronize(OrtIoBinding binding) => binding.SynchronizeBoundOutputs();

    public override void Dispose()
    {
        _pinned.Dispose();
        _device.Dispose();
        _pinnedInfo.Dispose();
        _deviceInfo.Dispose();
    }

    /// <summary>Memory from one of the session's allocators.</summary>
    private sealed class AllocatedBuffer : IRunnerBuffer
    {
        private readonly OrtMemoryAllocation _allocation;

        public AllocatedBuffer(OrtAllocator allocator, long bytes)
        {
            if (bytes > uint.MaxValue)
                throw new ModelLoadException($"a buffer of {bytes} bytes is more than one CUDA allocation here takes (4 GiB); use fewer slots (--max-batch) or a shorter context");
            _allocation = allocator.Allocate((uint)bytes);
            Bytes = bytes;
        }

        public nint Pointer => _allocation.DangerousGetHandle(); // the allocation is a handle over the memory itself
        public long Bytes { get; }

        public void Dispose() => _allocation.Dispose();
    }
}
