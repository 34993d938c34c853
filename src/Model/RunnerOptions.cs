namespace InferenceServer.Model;

/// <summary>How a <see cref="DecoderRunner"/> sizes its KV buffers and its ORT session.</summary>
public sealed record RunnerOptions
{
    /// <summary>KV slots: the most sequences that can hold a cache at once (the batch rows).</summary>
    public int MaxBatch { get; init; } = 8;

    /// <summary>Tokens a slot can hold (prompt and completion); 0 means the model's context length.</summary>
    public int MaxSequenceLength { get; init; }

    /// <summary>Threads ORT uses inside one operator; 0 lets ORT pick (one per physical core).</summary>
    public int IntraOpThreads { get; init; }

    /// <summary>Where the graph runs: ORT's CPU provider, or its CUDA provider (a float16 graph is the one to use there).</summary>
    public RunnerDevice Device { get; init; }

    /// <summary>The CUDA device, when <see cref="Device"/> is <see cref="RunnerDevice.Cuda"/>.</summary>
    public int DeviceId { get; init; }
}

/// <summary>The execution provider a runner's session uses.</summary>
public enum RunnerDevice
{
    Cpu,
    Cuda,
}
