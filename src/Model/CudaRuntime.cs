using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;

namespace InferenceServer.Model;

/// <summary>
/// ONNX Runtime's CUDA provider for a session, and the CUDA runtime calls ONNX Runtime does not
/// expose: whether a device is there, its free memory, copies between device buffers.
/// </summary>
public static partial class CudaRuntime
{
    private const string Library = "libcudart.so.13";
    private const int DeviceToDevice = 3; // cudaMemcpyDeviceToDevice

    /// <summary>Why a CUDA runner cannot run here, or null when it can: its provider library beside ONNX Runtime's, the CUDA runtime, a device.</summary>
    public static string? Unavailable()
    {
        // Beside the program in a self-contained publish; under runtimes/ in a build for any platform.
        string[] places = [AppContext.BaseDirectory, Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native")];
        if (!places.Any(place => File.Exists(Path.Combine(place, "libonnxruntime_providers_cuda.so"))))
            return "ONNX Runtime's CUDA provider is not in this build (build with -p:OrtCuda=true)";
        if (!NativeLibrary.TryLoad(Library, out var runtime))
            return $"the CUDA 13 runtime ({Library}) is not installed";
        NativeLibrary.Free(runtime);
        return cudaGetDeviceCount(out var count) == 0 && count > 0 ? null : "no CUDA device";
    }

    /// <summary>Puts the CUDA provider first in a session's providers (the CPU provider takes what it cannot run).</summary>
    internal static void AppendProvider(SessionOptions sessionOptions, int deviceId)
    {
        try
        {
            using var cuda = new OrtCUDAProviderOptions();
            cuda.UpdateOptions(new Dictionary<string, string>
            {
                ["device_id"] = deviceId.ToString(System.Globalization.CultureInfo.InvariantCulture),
                // KV buffers are allocated once, at their full size: no arena growth to race.
                ["arena_extend_strategy"] = "kSameAsRequested",
            });
            sessionOptions.AppendExecutionProvider_CUDA(cuda);
        }
        catch (Exception e) when (e is OnnxRuntimeException or DllNotFoundException or EntryPointNotFoundException)
        {
            throw new ModelLoadException(
                $"ONNX Runtime's CUDA execution provider is not available here ({e.Message}); it needs a build with -p:OrtCuda=true, an NVIDIA GPU and the CUDA 13 runtime libraries", e);
        }
    }

    [LibraryImport(Library)]
    private static partial int cudaGetDeviceCount(out int count);

    [LibraryImport(Library)]
    private static partial int cudaSetDevice(int device);

    [LibraryImport(Library)]
    private static partial int cudaMemGetInfo(out nuint free, out nuint total);

    [LibraryImport(Library)]
    private static partial int cudaMemcpy(nint destination, nint source, nuint count, int kind);

    [LibraryImport(Library)]
    private static partial int cudaDeviceSynchronize();

    internal static long FreeBytes(int device)
    {
        try
        {
            Check(cudaSetDevice(device), "cudaSetDevice");
            Check(cudaMemGetInfo(out var free, out _), "cudaMemGetInfo");
            return (long)free;
        }
        catch (DllNotFoundException e)
        {
            throw new ModelLoadException($"{Library} was not found: the CUDA 13 runtime is needed to size the KV pool (or give KvBlocks)", e);
        }
    }

    /// <summary>
    /// Copies between device buffers and waits for it: ONNX Runtime runs on a stream of its own,
    /// so the next step must not start before the copy is done.
    /// </summary>
    internal static void CopyOnDevice(nint source, nint destination, long bytes)
    {
        foreach (var (status, call) in new[] { (cudaMemcpy(destination, source, (nuint)bytes, DeviceToDevice), "cudaMemcpy"), (cudaDeviceSynchronize(), "cudaDeviceSynchronize") })
        {
            if (status != 0)
                throw new InvalidOperationException($"{call} failed with CUDA error {status}");
        }
    }

    private static void Check(int status, string call)
    {
        if (status != 0)
            throw new ModelLoadException($"{call} failed with CUDA error {status}");
    }
}
