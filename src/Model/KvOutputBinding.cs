namespace InferenceServer.Model;

/// <summary>
/// How the pools' aliased outputs (key_cache_out.N / value_cache_out.N) are bound. PagedAttention
/// writes into the pools it reads, and ONNX Runtime versions differ in what they accept for its
/// outputs: the pool itself, nothing (the kernel's output aliases its input), or a buffer ONNX
/// Runtime places on the device. The runner tries them in this order on a one-token warm-up step
/// and keeps the first that runs.
/// </summary>
public enum KvOutputBinding
{
    Pool,
    Unbound,
    Device,
}
