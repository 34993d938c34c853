using System.Text.Json;
using InferenceServer.LoadGenerator.Measurement;

namespace InferenceServer.LoadGenerator.Soak;

/// <summary>The engine's state as GET /admin/engine reports it.</summary>
public sealed record EngineSample(int Running, int Waiting, int KvBlocksUsed, int KvBlocksCached, int KvBlocksFree)
{
    public bool Idle => Running == 0 && Waiting == 0 && KvBlocksUsed == 0;

    /// <summary>The sample from /admin/engine's JSON; null when a field is missing.</summary>
    public static EngineSample? Parse(JsonElement root)
    {
        if (root.ValueKind != JsonValueKind.Object)
            return null;
        int? Field(string name) => root.TryGetProperty(name, out var value) && value.TryGetInt32(out var n) ? n : null;
        return Field("running") is { } running && Field("waiting") is { } waiting && Field("kv_blocks_used") is { } used
            && Field("kv_blocks_cached") is { } cached && Field("kv_blocks_free") is { } free
            ? new EngineSample(running, waiting, used, cached, free)
            : null;
    }
}

/// <summary>Our server's HTTP side-doors: GET /health and GET /admin/engine, with a short timeout each.</summary>
public sealed class ServerProbe(string? apiKey) : IDisposable
{
    private readonly HttpClient _http = new() { Timeout = TimeSpan.FromSeconds(5) };

    public async Task<bool> HealthyAsync(Uri root, CancellationToken cancellationToken)
    {
        try
        {
            using var response = await _http.GetAsync(new Uri(root, "/health"), cancellationToken).ConfigureAwait(false);
            return response.IsSuccessStatusCode;
        }
        catch (Exception e) when (e is HttpRequestException || (e is TaskCanceledException && !cancellationToken.IsCancellationRequested))
        {
            return false;
        }
    }

    /// <summary>The engine's state now; null when the server does not answer (which a soak reports, not hides).</summary>
    public Task<EngineSample?> EngineAsync(Uri root, CancellationToken cancellationToken) =>
        AdminEndpointCounters.GetAsync(_http, new Uri(root, "/admin/engine"), apiKey, EngineSample.Parse, cancellationToken);

    public void Dispose() => _http.Dispose();
}
