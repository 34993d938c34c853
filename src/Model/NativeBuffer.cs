using System.Runtime.InteropServices;

namespace InferenceServer.Model;

/// <summary>
/// Zeroed, 64-byte aligned native memory that ORT tensors are created over. It never moves, so
/// OrtValues and IO bindings made over it stay valid across steps without pinning managed arrays.
/// </summary>
internal sealed unsafe class NativeBuffer : IRunnerBuffer
{
    public nint Pointer { get; private set; }
    public long Bytes { get; }

    public NativeBuffer(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(bytes);
        Bytes = bytes;
        Pointer = (nint)NativeMemory.AlignedAlloc((nuint)bytes, 64);
        NativeMemory.Clear((void*)Pointer, (nuint)bytes);
    }

    public Span<T> AsSpan<T>(long elementOffset, int length) where T : unmanaged
    {
        if (elementOffset < 0 || (elementOffset + length) * sizeof(T) > Bytes)
            throw new ArgumentOutOfRangeException(nameof(length));
        return new Span<T>((T*)Pointer + elementOffset, length);
    }

    public void Dispose()
    {
        if (Pointer != 0)
        {
            NativeMemory.AlignedFree((void*)Pointer);
            Pointer = 0;
        }
    }
}
