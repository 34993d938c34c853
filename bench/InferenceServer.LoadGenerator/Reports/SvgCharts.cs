using System.Globalization;
using System.Net;
using System.Text;

namespace InferenceServer.LoadGenerator.Reports;

/// <summary>The report's two charts as inline SVG: nothing to load, so the page works offline.</summary>
public static class SvgCharts
{
    private const int Width = 840, Height = 420, Left = 70, Right = 250, Top = 40, Bottom = 50;
    private static readonly string[] Palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"];

    /// <summary>p50 inter-token latency against output tokens/s, one line per sweep, each point labelled with its level.</summary>
    public static string LatencyThroughput(BenchmarkReport report)
    {
        ArgumentNullException.ThrowIfNull(report);
        var series = report.Runs
            .Where(r => r.Workload is "concurrency" or "rate")
            .Select(r => (r.Name, Points: r.Levels.Where(l => l.InterTokenMs is not null)
                .Select(l => (X: l.OutputTokensPerSecond, Y: l.InterTokenMs!.P50, Label: Short(l.Label))).ToList()))
            .Where(s => s.Points.Count > 0)
            .ToList();
        var svg = Open("chart-latency-throughput", "Latency vs throughput: p50 inter-token latency against output tokens/s");
        if (series.Count == 0)
            return Empty(svg);
        var xMax = NiceMax(series.SelectMany(s => s.Points).Max(p => p.X));
        var yMax = NiceMax(series.SelectMany(s => s.Points).Max(p => p.Y));
        Axes(svg, xMax, yMax, "output tokens/s", "p50 inter-token latency (ms)");
        for (var i = 0; i < series.Count; i++)
        {
            var color = Palette[i % Palette.Length];
            var points = series[i].Points.Select(p => (X: PlotX(p.X, xMax), Y: PlotY(p.Y, yMax), p.Label)).ToList();
            svg.Append(CultureInfo.InvariantCulture, $"<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{string.Join(' ', points.Select(p => N(p.X) + "," + N(p.Y)))}\"/>");
            foreach (var p in points)
            {
                svg.Append(CultureInfo.InvariantCulture, $"<circle cx=\"{N(p.X)}\" cy=\"{N(p.Y)}\" r=\"4\" fill=\"{color}\"/>");
                svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{N(p.X + 6)}\" y=\"{N(p.Y - 6)}\" font-size=\"11\" fill=\"{color}\">{E(p.Label)}</text>");
            }
            Legend(svg, i, color, series[i].Name);
        }
        return Close(svg);
    }

    /// <summary>A histogram of time to first token for the first run under test (all its levels together).</summary>
    public static string TimeToFirstToken(BenchmarkReport report)
    {
        ArgumentNullException.ThrowIfNull(report);
        var run = report.Runs.Where(r => !r.Reference).Concat(report.Runs).FirstOrDefault(r => r.TimeToFirstTokenHistogram is not null);
        var title = run is null ? "Time to first token distribution" : $"Time to first token distribution: {run.Name}";
        var svg = Open("chart-ttft", title);
        if (run?.TimeToFirstTokenHistogram is not { } histogram)
            return Empty(svg);
        var bins = histogram.Counts.Length;
        var xMax = histogram.Start + histogram.BinWidth * bins;
        var yMax = NiceMax(histogram.Counts.Max());
        Axes(svg, xMax, yMax, $"time to first token ({histogram.Unit}); the last bar holds everything above", "requests");
        for (var i = 0; i < bins; i++)
        {
            if (histogram.Counts[i] == 0)
                continue;
            var x0 = PlotX(histogram.Start + histogram.BinWidth * i, xMax);
            var x1 = PlotX(histogram.Start + histogram.BinWidth * (i + 1), xMax);
            var y = PlotY(histogram.Counts[i], yMax);
            svg.Append(CultureInfo.InvariantCulture,
                $"<rect x=\"{N(x0 + 1)}\" y=\"{N(y)}\" width=\"{N(Math.Max(1, x1 - x0 - 2))}\" height=\"{N(Height - Bottom - y)}\" fill=\"{Palette[0]}\"><title>{N(histogram.Start + histogram.BinWidth * i)}–{N(histogram.Start + histogram.BinWidth * (i + 1))} {E(histogram.Unit)}: {histogram.Counts[i]}</title></rect>");
        }
        return Close(svg);
    }

    private static StringBuilder Open(string id, string title)
    {
        var svg = new StringBuilder();
        svg.Append(CultureInfo.InvariantCulture, $"<svg id=\"{id}\" role=\"img\" viewBox=\"0 0 {Width} {Height}\" width=\"{Width}\" height=\"{Height}\" font-family=\"sans-serif\">");
        svg.Append(CultureInfo.InvariantCulture, $"<title>{E(title)}</title>");
        svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{Left}\" y=\"22\" font-size=\"14\" font-weight=\"bold\">{E(title)}</text>");
        return svg;
    }

    private static string Empty(StringBuilder svg)
    {
        svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{Width / 2}\" y=\"{Height / 2}\" text-anchor=\"middle\" fill=\"#888\">no data</text>");
        return Close(svg);
    }

    private static string Close(StringBuilder svg) => svg.Append("</svg>").ToString();

    private static void Axes(StringBuilder svg, double xMax, double yMax, string xLabel, string yLabel)
    {
        const int Ticks = 5;
        for (var i = 0; i <= Ticks; i++)
        {
            var x = PlotX(xMax * i / Ticks, xMax);
            var y = PlotY(yMax * i / Ticks, yMax);
            svg.Append(CultureInfo.InvariantCulture, $"<line x1=\"{N(x)}\" y1=\"{Top}\" x2=\"{N(x)}\" y2=\"{Height - Bottom}\" stroke=\"#eee\"/>");
            svg.Append(CultureInfo.InvariantCulture, $"<line x1=\"{Left}\" y1=\"{N(y)}\" x2=\"{Width - Right}\" y2=\"{N(y)}\" stroke=\"#eee\"/>");
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{N(x)}\" y=\"{Height - Bottom + 16}\" font-size=\"11\" text-anchor=\"middle\">{Tick(xMax * i / Ticks)}</text>");
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{Left - 6}\" y=\"{N(y + 4)}\" font-size=\"11\" text-anchor=\"end\">{Tick(yMax * i / Ticks)}</text>");
        }
        svg.Append(CultureInfo.InvariantCulture, $"<line x1=\"{Left}\" y1=\"{Height - Bottom}\" x2=\"{Width - Right}\" y2=\"{Height - Bottom}\" stroke=\"#333\"/>");
        svg.Append(CultureInfo.InvariantCulture, $"<line x1=\"{Left}\" y1=\"{Top}\" x2=\"{Left}\" y2=\"{Height - Bottom}\" stroke=\"#333\"/>");
        svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{(Left + Width - Right) / 2}\" y=\"{Height - 12}\" font-size=\"12\" text-anchor=\"middle\">{E(xLabel)}</text>");
        svg.Append(CultureInfo.InvariantCulture, $"<text x=\"16\" y=\"{(Top + Height - Bottom) / 2}\" font-size=\"12\" text-anchor=\"middle\" transform=\"rotate(-90 16 {(Top + Height - Bottom) / 2})\">{E(yLabel)}</text>");
    }

    private static void Legend(StringBuilder svg, int index, string color, string name)
    {
        var y = Top + 10 + index * 20;
        svg.Append(CultureInfo.InvariantCulture, $"<rect x=\"{Width - Right + 14}\" y=\"{y - 9}\" width=\"12\" height=\"12\" fill=\"{color}\"/>");
        // Long run names are cut to fit beside the plot; the full name shows on hover.
        var shown = name.Length > 34 ? name[..33] + "…" : name;
        svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{Width - Right + 32}\" y=\"{y + 1}\" font-size=\"12\"><title>{E(name)}</title>{E(shown)}</text>");
    }

    private static double PlotX(double value, double max) => Left + value / max * (Width - Left - Right);

    private static double PlotY(double value, double max) => Height - Bottom - value / max * (Height - Top - Bottom);

    /// <summary>An axis end above <paramref name="value"/> that divides into five round ticks.</summary>
    private static double NiceMax(double value) => value > 0 ? Histogram.NiceStep(value / 5) * 5 : 1;

    private static string Short(string label) =>
        label.Replace(" streams", "", StringComparison.Ordinal).Replace(" stream", "", StringComparison.Ordinal).Replace(" req/s", "/s", StringComparison.Ordinal);

    private static string N(double value) => value.ToString("0.##", CultureInfo.InvariantCulture);

    private static string Tick(double value) => value.ToString(value >= 100 ? "0" : value >= 10 ? "0.#" : "0.##", CultureInfo.InvariantCulture);

    private static string E(string text) => WebUtility.HtmlEncode(text);
}
