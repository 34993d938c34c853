using System.Diagnostics.Metrics;
using System.Net.Http.Headers;
using System.Text.Json;
using InferenceServer.Engine;

namespace InferenceServer.LoadGenerator.Measurement;

/// <summary>
/// The engine's counts that a level compares before and after (GET /admin/engine's fields; the
/// speculation counts only where the engine runs in this process).
/// </summary>
public sealed record EngineCounts(long Iterations, long Cancellations, long LateCancellations, int Running, int Waiting,
    long DraftedTokens = 0, long AcceptedTokens = 0, long InterruptedPrefills = 0);

/// <summary>Reads the serving engine's counts, over HTTP or in this process.</summary>
public interface IEngineCounters
{
    /// <summary>"admin" or "meter": where <see cref="CancellationFigures"/> says the figures came from.</summary>
    string Source { get; }

    /// <summary>The counts now, or null when they cannot be read.</summary>
    Task<EngineCounts?> ReadAsync(CancellationToken cancellationToken);

    /// <summary>Cancellation-to-free times recorded since the previous call, in milliseconds; null when not observable.</summary>
    IReadOnlyList<double>? TakeCancelToFree();

    /// <summary>Durations of the engine's iterations that ran the model since the previous call, in milliseconds; null when not observable.</summary>
    IReadOnlyList<double>? TakeIterationTimes();
}

/// <summary>GET /admin/engine on our HTTP port.</summary>
public sealed class AdminEndpointCounters(Uri admin, string? apiKey) : IEngineCounters, IDisposable
{
    private readonly HttpClient _http = new() { Timeout = TimeSpan.FromSeconds(5) };
    private readonly Uri _endpoint = new(admin, "/admin/engine");

    public string Source => "admin";

    public Task<EngineCounts?> ReadAsync(CancellationToken cancellationToken) =>
        GetAsync(_http, _endpoint, apiKey, Parse, cancellationToken);

    /// <summary>
    /// GET <paramref name="endpoint"/> (with the API key) and parse its JSON; null when the server
    /// does not answer, answers with an error, or sends something else.
    /// </summary>
    public static async Task<T?> GetAsync<T>(HttpClient http, Uri endpoint, string? apiKey, Func<JsonElement, T?> parse, CancellationToken cancellationToken)
        where T : class
    {
        ArgumentNullException.ThrowIfNull(http);
        ArgumentNullException.ThrowIfNull(parse);
        using var request = new HttpRequestMessage(HttpMethod.Get, endpoint);
        if (apiKey is not null)
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", apiKey);
        try
        {
            using var response = await http.SendAsync(request, cancellationToken).ConfigureAwait(false);
            if (!response.IsSuccessStatusCode)
                return null;
            await using var body = await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
            using var doc = await JsonDocument.ParseAsync(body, cancellationToken: cancellationToken).ConfigureAwait(false);
            return parse(doc.RootElement);
        }
        catch (Exception e) when (e is HttpRequestException or JsonException or TaskCanceledException && !cancellationToken.IsCancellationRequested)
        {
            return null;
        }
    }

    /// <summary>The counts from /admin/engine's JSON; null when a field is missing.</summary>
    public static EngineCounts? Parse(JsonElement root)
    {
        if (root.ValueKind != JsonValueKind.Object
            || !root.TryGetProperty("iterations", out var iterations)
            || !root.TryGetProperty("cancellations", out var cancellations)
            || !root.TryGetProperty("late_cancellations", out var late))
        {
            return null;
        }
        return new EngineCounts(iterations.GetInt64(), cancellations.GetInt64(), late.GetInt64(),
            root.TryGetProperty("running", out var running) ? running.GetInt32() : 0,
            root.TryGetProperty("waiting", out var waiting) ? waiting.GetInt32() : 0,
            InterruptedPrefills: root.TryGetProperty("interrupted_prefills", out var interrupted) ? interrupted.GetInt64() : 0);
    }

    public IReadOnlyList<double>? TakeCancelToFree() => null;

    public IReadOnlyList<double>? TakeIterationTimes() => null;

    public void Dispose() => _http.Dispose();
}

/// <summary>
/// An engine in this process: its snapshot, and the engine's own cancellation-to-free and
/// iteration-duration histograms (meter "InferenceServer.Engine"), whose every measurement only a
/// listener in the same process can see.
/// </summary>
public sealed class InProcessCounters : IEngineCounters, IDisposable
{
    private const string CancelToFreeInstrument = "inference.cancellation.to_free";
    private const string IterationInstrument = "inference.iteration.duration";
    private const string DraftedInstrument = "inference.speculation.draft_tokens";
    private const string AcceptedInstrument = "inference.speculation.accepted_tokens";
    private readonly IInferenceEngine _engine;
    private long _drafted, _accepted;
    private readonly MeterListener _listener = new();
    private readonly Lock _lock = new();
    private List<double> _samples = [];
    private List<double> _iterations = [];

    public InProcessCounters(IInferenceEngine engine)
    {
        _engine = engine ?? throw new ArgumentNullException(nameof(engine));
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter.Name == "InferenceServer.Engine" && instrument.Name is CancelToFreeInstrument or IterationInstrument or DraftedInstrument or AcceptedInstrument)
                listener.EnableMeasurementEvents(instrument);
        };
        _listener.SetMeasurementEventCallback<long>((instrument, tokens, _, _) =>
            Interlocked.Add(ref instrument.Name == DraftedInstrument ? ref _drafted : ref _accepted, tokens));
        _listener.SetMeasurementEventCallback<double>((instrument, seconds, _, _) =>
        {
            lock (_lock)
                (instrument.Name == IterationInstrument ? _iterations : _samples).Add(seconds * 1000);
        });
        _listener.Start();
    }

    public string Source => "meter";

    public Task<EngineCounts?> ReadAsync(CancellationToken cancellationToken)
    {
        var s = _engine.Snapshot;
        return Task.FromResult<EngineCounts?>(new EngineCounts(s.Iterations, s.Cancellations, s.LateCancellations, s.Running, s.Waiting,
            Interlocked.Read(ref _drafted), Interlocked.Read(ref _accepted), s.InterruptedPrefills));
    }

    public IReadOnlyList<double>? TakeCancelToFree()
    {
        lock (_lock)
        {
            var taken = _samples;
            _samples = [];
            return taken;
        }
    }

    public IReadOnlyList<double>? TakeIterationTimes()
    {
        lock (_lock)
        {
            var taken = _iterations;
            _iterations = [];
            return taken;
        }
    }

    public void Dispose() => _listener.Dispose();
}
