using System.Diagnostics.Metrics;
using Microsoft.AspNetCore.Http;
using Prometheus;

namespace InferenceServer.Server.Http;

/// <summary>
/// GET /metrics through prometheus-net, one registry per server: each engine's instruments under
/// our names and under the names vLLM exports, with a model_name label naming the engine's model
/// (one series per served base model; adapters run in their base's engine), process metrics
/// (prometheus-net's DotNetStats), and the meters ASP.NET Core and Kestrel create for this host
/// (prometheus-net's MeterAdapter). The engine's instruments reach prometheus-net through a
/// MeterListener whose callbacks go straight to series made when the instrument was published, so
/// a measurement on the engine thread allocates nothing.
/// </summary>
internal sealed class MetricsExport : IDisposable
{
    public const string ContentType = "text/plain; version=0.0.4; charset=utf-8";

    public const string ModelLabel = "model_name";

    /// <summary>Upper bounds of the latency buckets, in seconds: from a fast decode step to a long generation.</summary>
    private static readonly double[] Bounds =
        [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

    /// <summary>The engine's tag on inference.requests.finished, and its values (vLLM's names).</summary>
    private const string FinishedReasonTag = "finished_reason";

    private static readonly string[] FinishedReasons = ["stop", "length", "abort"];

    // prometheus-net only takes names of letters, digits and '_'; these are registered with
    // VllmPrefix and written with "vllm:" (the same length, so the text is fixed in place).
    private const string VllmPrefix = "vllm_";

    /// <summary>The engine's instruments that vLLM exports too, and vLLM's names for them.</summary>
    private static readonly Dictionary<string, string> VllmNames = new(StringComparer.Ordinal)
    {
        ["inference.requests.running"] = "vllm_num_requests_running",
        ["inference.requests.waiting"] = "vllm_num_requests_waiting",
        ["inference.kv.usage"] = "vllm_kv_cache_usage_perc",
        ["inference.time_to_first_token"] = "vllm_time_to_first_token_seconds",
        ["inference.inter_token_latency"] = "vllm_inter_token_latency_seconds",
        ["inference.request.duration"] = "vllm_e2e_request_latency_seconds",
        ["inference.request.queue_time"] = "vllm_request_queue_time_seconds",
        ["inference.tokens.prompt"] = "vllm_prompt_tokens_total",
        ["inference.tokens.generated"] = "vllm_generation_tokens_total",
        ["inference.requests.finished"] = "vllm_request_success_total",
        ["inference.speculation.draft_tokens"] = "vllm_spec_decode_num_draft_tokens_total",
        ["inference.speculation.accepted_tokens"] = "vllm_spec_decode_num_accepted_tokens_total",
    };

    private readonly CollectorRegistry _registry = Metrics.NewCustomRegistry();
    private readonly Dictionary<Meter, IMetricFactory> _engineFactories = [];
    private readonly MeterListener _engine = new();
    private readonly IDisposable _host;

    /// <param name="engines">Each engine's meter (this server's; tests run several in a process) and the model_name its series carry.</param>
    /// <param name="hostMeters">The host's meter factory: ASP.NET Core's and Kestrel's meters of this host carry it as their scope.</param>
    public MetricsExport(IEnumerable<(Meter Meter, string ModelName)> engines, IMeterFactory hostMeters)
    {
        ArgumentNullException.ThrowIfNull(engines);
        foreach (var (meter, modelName) in engines)
            _engineFactories.Add(meter, Metrics.WithCustomRegistry(_registry).WithLabels(new Dictionary<string, string> { [ModelLabel] = modelName }));
        _engine.InstrumentPublished = (instrument, listener) =>
        {
            if (_engineFactories.TryGetValue(instrument.Meter, out var factory))
                listener.EnableMeasurementEvents(instrument, Sink.For(instrument, factory));
        };
        _engine.SetMeasurementEventCallback<long>((_, value, tags, state) => ((Sink)state!).Record(value, tags));
        _engine.SetMeasurementEventCallback<int>((_, value, tags, state) => ((Sink)state!).Record(value, tags));
        _engine.SetMeasurementEventCallback<double>((_, value, tags, state) => ((Sink)state!).Record(value, tags));
        _engine.Start();
        _registry.AddBeforeCollectCallback(_engine.RecordObservableInstruments);

        DotNetStats.Register(_registry);
        _host = MeterAdapter.StartListening(new MeterAdapterOptions
        {
            MetricFactory = Metrics.WithCustomRegistry(_registry),
            InstrumentFilterPredicate = instrument => ReferenceEquals(instrument.Meter.Scope, hostMeters),
            // The buckets each instrument advises (ASP.NET Core's durations have theirs), else ours.
            ResolveHistogramBuckets = instrument => instrument is Histogram<double> { Advice.HistogramBucketBoundaries: { } advised } ? [.. advised] : Bounds,
        });
    }

    /// <summary>Writes the exposition text (Prometheus' text format 0.0.4) to the response.</summary>
    public async Task WriteAsync(HttpContext context)
    {
        using var text = new MemoryStream();
        await _registry.CollectAndExportAsTextAsync(text, ExpositionFormat.PrometheusText, context.RequestAborted).ConfigureAwait(false);
        var written = text.GetBuffer().AsMemory(0, (int)text.Length);
        VllmColons(written.Span);
        context.Response.ContentType = ContentType;
        await context.Response.Body.WriteAsync(written, context.RequestAborted).ConfigureAwait(false);
    }

    /// <summary>
    /// Turns "vllm_" into "vllm:" where a line names a metric: at the start of a sample line and
    /// after "# HELP " / "# TYPE ". Label values and help text escape their line breaks, so
    /// nothing else starts a line.
    /// </summary>
    internal static void VllmColons(Span<byte> text)
    {
        var start = 0;
        while (start < text.Length)
        {
            var line = text[start..];
            var end = line.IndexOf((byte)'\n');
            if (end >= 0)
                line = line[..end];
            var name = line.StartsWith("# HELP "u8) || line.StartsWith("# TYPE "u8) ? line[7..] : line;
            if (name.StartsWith("vllm_"u8))
                name[4] = (byte)':';
            start += end < 0 ? line.Length : end + 1;
        }
    }

    public void Dispose()
    {
        _host.Dispose();
        _engine.Dispose();
    }

    /// <summary>Our name for an engine instrument: dots become underscores, counters end in _total, histograms in seconds in _seconds.</summary>
    internal static string OwnName(Instrument instrument)
    {
        var name = instrument.Name.Replace('.', '_');
        return instrument switch
        {
            Counter<long> or Counter<int> or Counter<double> => name + "_total",
            Histogram<double> when instrument.Unit == "s" => name + "_seconds",
            _ => name,
        };
    }

    /// <summary>Where one engine instrument's measurements go: its series under each of its names.</summary>
    private abstract class Sink
    {
        public abstract void Record(double value, ReadOnlySpan<KeyValuePair<string, object?>> tags);

        public static Sink For(Instrument instrument, IMetricFactory factory)
        {
            string[] names = VllmNames.TryGetValue(instrument.Name, out var vllm) ? [OwnName(instrument), vllm] : [OwnName(instrument)];
            var help = instrument.Description ?? instrument.Name;
            switch (instrument)
            {
                case Counter<long> or Counter<int> or Counter<double> when instrument.Name == "inference.requests.finished":
                    var byReason = names.Select(name => factory.CreateCounter(name, help, new CounterConfiguration { LabelNames = [FinishedReasonTag] })).ToArray();
                    return new ReasonCounterSink(FinishedReasons.Select(reason => byReason.Select(counter => (ICounter)counter.WithLabels(reason)).ToArray()).ToArray());
                case Counter<long> or Counter<int> or Counter<double>:
                    return new CounterSink([.. names.Select(name => (ICounter)factory.CreateCounter(name, help))]);
                case Histogram<double> or Histogram<long> or Histogram<int>:
                    return new HistogramSink([.. names.Select(name => (IHistogram)factory.CreateHistogram(name, help, new HistogramConfiguration { Buckets = Bounds }))]);
                default:
                    return new GaugeSink([.. names.Select(name => (IGauge)factory.CreateGauge(name, help))]);
            }
        }
    }

    private sealed class CounterSink(ICounter[] series) : Sink
    {
        public override void Record(double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            foreach (var counter in series)
                counter.Inc(value, Exemplar.None);
        }
    }

    /// <summary>A counter tagged with finished_reason: one series per reason (FinishedReasons' order) and name.</summary>
    private sealed class ReasonCounterSink(ICounter[][] series) : Sink
    {
        public override void Record(double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            foreach (var tag in tags)
            {
                if (tag.Key != FinishedReasonTag || tag.Value is not string reason)
                    continue;
                var index = Array.IndexOf(FinishedReasons, reason);
                if (index < 0)
                    return;
                foreach (var counter in series[index])
                    counter.Inc(value, Exemplar.None);
                return;
            }
        }
    }

    private sealed class HistogramSink(IHistogram[] series) : Sink
    {
        public override void Record(double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            foreach (var histogram in series)
                histogram.Observe(value, Exemplar.None);
        }
    }

    private sealed class GaugeSink(IGauge[] series) : Sink
    {
        public override void Record(double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            foreach (var gauge in series)
                gauge.Set(value);
        }
    }
}
