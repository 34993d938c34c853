using System.Diagnostics.Metrics;
using System.Globalization;
using System.Text;

namespace InferenceServer.Server.Http;

/// <summary>
/// GET /metrics: the engine's instruments in Prometheus' text format (version 0.0.4). A
/// MeterListener subscribed to the one engine's meter keeps counter totals and histogram buckets
/// as the loop records them (an interlocked add per measurement, nothing allocated); gauges are
/// read when scraped. Names follow Prometheus' habits: dots become underscores, counters end in
/// _total, histograms in seconds end in _seconds.
/// </summary>
internal sealed class PrometheusExporter : IDisposable
{
    /// <summary>Upper bounds of the latency buckets, in seconds: from a fast decode step to a long generation.</summary>
    private static readonly double[] Bounds =
        [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

    private readonly MeterListener _listener = new();
    private readonly Meter _meter;
    private readonly List<Series> _series = [];
    private readonly Lock _scrape = new();

    public PrometheusExporter(Meter meter)
    {
        _meter = meter;
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (!ReferenceEquals(instrument.Meter, _meter))
                return;
            var series = new Series(instrument);
            lock (_series)
                _series.Add(series);
            listener.EnableMeasurementEvents(instrument, series);
        };
        _listener.SetMeasurementEventCallback<long>((_, value, _, state) => ((Series)state!).Record(value));
        _listener.SetMeasurementEventCallback<int>((_, value, _, state) => ((Series)state!).Record(value));
        _listener.SetMeasurementEventCallback<double>((_, value, _, state) => ((Series)state!).Record(value));
        _listener.Start();
    }

    public const string ContentType = "text/plain; version=0.0.4; charset=utf-8";

    /// <summary>The exposition text as of now (gauges observed at this call).</summary>
    public string Scrape()
    {
        var text = new StringBuilder();
        lock (_scrape)
        {
            _listener.RecordObservableInstruments();
            Series[] all;
            lock (_series)
                all = [.. _series];
            foreach (var series in all.OrderBy(s => s.Name, StringComparer.Ordinal))
                series.Write(text);
        }
        return text.ToString();
    }

    public void Dispose() => _listener.Dispose();

    private sealed class Series
    {
        private readonly string _help;
        private readonly Kind _kind;
        private readonly long[]? _buckets; // per bound, not cumulative; the last is +Inf
        private long _count;
        private double _sum; // a counter's total, a histogram's sum, a gauge's latest value

        public Series(Instrument instrument)
        {
            _kind = instrument switch
            {
                Counter<long> or Counter<int> or Counter<double> => Kind.Counter,
                Histogram<double> or Histogram<long> => Kind.Histogram,
                _ => Kind.Gauge,
            };
            var name = instrument.Name.Replace('.', '_');
            if (_kind == Kind.Histogram && instrument.Unit == "s")
                name += "_seconds";
            if (_kind == Kind.Counter)
                name += "_total";
            Name = name;
            _help = instrument.Description ?? instrument.Name;
            if (_kind == Kind.Histogram)
                _buckets = new long[Bounds.Length + 1];
        }

        public string Name { get; }

        public void Record(double value)
        {
            switch (_kind)
            {
                case Kind.Gauge:
                    Volatile.Write(ref _sum, value);
                    break;
                case Kind.Counter:
                    Add(ref _sum, value);
                    break;
                default:
                    var bucket = Array.BinarySearch(Bounds, value);
                    Interlocked.Increment(ref _buckets![bucket >= 0 ? bucket : ~bucket]);
                    Add(ref _sum, value);
                    Interlocked.Increment(ref _count);
                    break;
            }
        }

        public void Write(StringBuilder text)
        {
            var type = _kind switch { Kind.Counter => "counter", Kind.Histogram => "histogram", _ => "gauge" };
            text.Append("# HELP ").Append(Name).Append(' ').Append(_help.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal)).Append('\n');
            text.Append("# TYPE ").Append(Name).Append(' ').Append(type).Append('\n');
            if (_kind != Kind.Histogram)
            {
                text.Append(Name).Append(' ').Append(Number(Volatile.Read(ref _sum))).Append('\n');
                return;
            }
            // Read the count first: buckets recorded after it only make the +Inf line larger, never smaller than the finite ones.
            var count = Interlocked.Read(ref _count);
            long cumulative = 0;
            for (var i = 0; i < Bounds.Length; i++)
            {
                cumulative += Interlocked.Read(ref _buckets![i]);
                text.Append(Name).Append("_bucket{le=\"").Append(Number(Bounds[i])).Append("\"} ").Append(cumulative.ToString(CultureInfo.InvariantCulture)).Append('\n');
            }
            cumulative += Interlocked.Read(ref _buckets![^1]);
            text.Append(Name).Append("_bucket{le=\"+Inf\"} ").Append(Math.Max(count, cumulative).ToString(CultureInfo.InvariantCulture)).Append('\n');
            text.Append(Name).Append("_sum ").Append(Number(Volatile.Read(ref _sum))).Append('\n');
            text.Append(Name).Append("_count ").Append(Math.Max(count, cumulative).ToString(CultureInfo.InvariantCulture)).Append('\n');
        }

        private static void Add(ref double total, double value)
        {
            double seen, sum;
            do
            {
                seen = Volatile.Read(ref total);
                sum = seen + value;
            }
            while (Interlocked.CompareExchange(ref total, sum, seen) != seen);
        }

        private static string Number(double value) => value.ToString("R", CultureInfo.InvariantCulture);
    }

    private enum Kind
    {
        Counter,
        Gauge,
        Histogram,
    }
}
