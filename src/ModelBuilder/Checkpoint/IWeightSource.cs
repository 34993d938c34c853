namespace InferenceServer.ModelBuilder.Checkpoint;

/// <summary>
/// Where the builder gets weights from, by Hugging Face tensor name and in Hugging Face layout
/// (linear weights [out, in]), always as float32 whatever the stored precision.
/// </summary>
public interface IWeightSource : IDisposable
{
    bool Contains(string name);

    /// <summary>The tensor, checked against the shape the config implies.</summary>
    float[] Read(string name, ReadOnlySpan<long> expectedShape);
}
