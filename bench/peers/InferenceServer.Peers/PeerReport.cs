using System.Globalization;
using System.Text;
using System.Text.Json;
using InferenceServer.LoadGenerator.Measurement;

namespace InferenceServer.Peers;

/// <summary>One engine at one stream count: the figures the comparison is about.</summary>
internal sealed record EngineFigures(string Engine, int Streams, int Requests, double OutputTokensPerSecond, double TtftP50Ms, double TtftP90Ms, double ItlP50Ms)
{
    /// <summary>How many rounds measured this engine at this stream count; the figures are from its best.</summary>
    public int Rounds { get; init; } = 1;
}

/// <summary>One model of the run, every engine at every stream count.</summary>
internal sealed record ModelFigures(string Name, long Parameters, string Config, List<EngineFigures> Figures)
{
    /// <summary>Per stream count: our output tokens/s over the best peer's (above 1: we are ahead).</summary>
    public IEnumerable<(int Streams, double Ratio, string BestPeer)> Lead() =>
        Figures.GroupBy(f => f.Streams).OrderBy(g => g.Key).Select(g =>
        {
            var ours = g.Single(f => f.Engine == PeerReport.Ours);
            var best = g.Where(f => f.Engine != PeerReport.Ours).MaxBy(f => f.OutputTokensPerSecond)!;
            return (g.Key, ours.OutputTokensPerSecond / best.OutputTokensPerSecond, best.Engine);
        });
}

/// <summary>
/// Gathers the engines' raw results of a run (raw/&lt;model&gt;/round-N/: ours/report.json from the
/// load generator, llamacpp.json, genai.json) into report.json, report.md and report.html, with every
/// engine's figures computed alike: TTFT and inter-token time (per request, the mean gap after the
/// first token) as percentiles over requests, output tokens/s as all output tokens over the level's
/// wall time.
/// </summary>
internal static class PeerReport
{
    public const string Ours = "ours";
    private static readonly string[] Engines = [Ours, "llama.cpp", "onnxruntime-genai"];
    private static readonly string[] Colors = ["#1f6feb", "#d1242f", "#8250df"];

    public static void Write(string rawFolder, string outputFolder, string title, IReadOnlyList<string> notes)
    {
        var models = Directory.GetDirectories(rawFolder).Select(LoadModel).OrderBy(m => m.Parameters).ToList();
        if (models.Count == 0)
            throw new UsageException($"{rawFolder}: no model folders");
        var settings = PromptSet.Load(Path.Combine(Directory.GetDirectories(rawFolder).Order(StringComparer.Ordinal).First(), "prompts.json"));
        Directory.CreateDirectory(outputFolder);
        var json = new
        {
            title,
            generated = DateTimeOffset.UtcNow,
            settings = new { settings.PromptTokens, settings.OutputTokens, settings.Seed, settings.Source, requestsPerLevel = settings.Levels[0].Streams.Sum(s => s.Length) },
            models = models.Select(m => new
            {
                m.Name,
                m.Parameters,
                m.Config,
                figures = m.Figures,
                lead = m.Lead().Select(l => new { l.Streams, oursOverBestPeer = l.Ratio, bestPeer = l.BestPeer }),
            }),
            notes,
        };
        File.WriteAllText(Path.Combine(outputFolder, "report.json"), JsonSerializer.Serialize(json, new JsonSerializerOptions(PromptSet.Json) { WriteIndented = true }));
        File.WriteAllText(Path.Combine(outputFolder, "report.md"), Markdown(title, models, settings, notes));
        File.WriteAllText(Path.Combine(outputFolder, "report.html"), Html(title, models, settings, notes));
    }

    private static ModelFigures LoadModel(string folder)
    {
        // Every round's figures; per engine and stream count, the round with the most output tokens/s.
        var rounds = Directory.GetDirectories(folder, "round-*");
        var figures = (rounds.Length > 0 ? rounds : [folder]).SelectMany(LoadRound)
            .GroupBy(f => (f.Engine, f.Streams))
            .Select(g => g.MaxBy(f => f.OutputTokensPerSecond)! with { Rounds = g.Count() })
            .ToList();
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, "model.json")));
        return new ModelFigures(Path.GetFileName(folder), doc.RootElement.GetProperty("parameters").GetInt64(),
            doc.RootElement.GetProperty("config").GetString() ?? "", figures);
    }

    private static IEnumerable<EngineFigures> LoadRound(string folder)
    {
        foreach (var figure in FromLoadGenerator(Path.Combine(folder, "ours", "report.json")))
            yield return figure;
        foreach (var file in new[] { "llamacpp.json", "genai.json" })
        {
            var result = EngineResult.Load(Path.Combine(folder, file));
            foreach (var level in result.Levels)
                yield return Summarize(result.Engine, level);
        }
    }

    private static EngineFigures Summarize(string engine, EngineLevel level)
    {
        var ttft = Percentiles.Summarize(level.Requests.Where(r => r.TokenMs.Length > 0).Select(r => r.TokenMs[0]))!;
        var itl = Percentiles.Summarize(level.Requests.Where(r => r.TokenMs.Length > 1).Select(r => (r.TokenMs[^1] - r.TokenMs[0]) / (r.TokenMs.Length - 1)))!;
        var tokens = level.Requests.Sum(r => (long)r.OutputTokens);
        return new EngineFigures(engine, level.Streams, level.Requests.Count, tokens / (level.WallMs / 1000), ttft.P50, ttft.P90, itl.P50);
    }

    // The load generator's report.json (snake_case): its concurrency run, one level per stream count.
    private static IEnumerable<EngineFigures> FromLoadGenerator(string path)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(path));
        var run = doc.RootElement.GetProperty("runs")[0];
        foreach (var level in run.GetProperty("levels").EnumerateArray())
        {
            var ttft = level.GetProperty("time_to_first_token_ms");
            yield return new EngineFigures(Ours, (int)level.GetProperty("value").GetDouble(), level.GetProperty("requests").GetInt32(),
                level.GetProperty("output_tokens_per_second").GetDouble(), ttft.GetProperty("p50").GetDouble(), ttft.GetProperty("p90").GetDouble(),
                level.GetProperty("inter_token_ms").GetProperty("p50").GetDouble());
        }
    }

    private static string F(double value, string format = "F1") => value.ToString(format, CultureInfo.InvariantCulture);

    private static string Parameters(long count) => count >= 1_000_000 ? $"{F(count / 1e6)}M" : count.ToString(CultureInfo.InvariantCulture);

    private static string Markdown(string title, List<ModelFigures> models, PromptSet settings, IReadOnlyList<string> notes)
    {
        var md = new StringBuilder();
        md.AppendLine(CultureInfo.InvariantCulture, $"# {title}").AppendLine();
        md.AppendLine(CultureInfo.InvariantCulture, $"Prompt {settings.PromptTokens} tokens, {settings.OutputTokens} new tokens, greedy; {settings.Levels[0].Streams.Sum(s => s.Length)} requests per stream count, sent by that many streams in a closed loop. ");
        md.AppendLine("Output tokens/s: all output tokens of a stream count over its wall time. ITL: per request, the mean gap between tokens after the first; p50 over requests. ");
        md.AppendLine(CultureInfo.InvariantCulture, $"Each engine ran {models.Max(m => m.Figures.Max(f => f.Rounds))} time(s), in alternating order; each row is its run with the most output tokens/s.").AppendLine();
        md.AppendLine("| model | streams | engine | output tok/s | ITL p50 | TTFT p50 | TTFT p90 |");
        md.AppendLine("|---|---:|---|---:|---:|---:|---:|");
        foreach (var model in models)
        {
            foreach (var f in model.Figures.OrderBy(f => f.Streams).ThenBy(f => Array.IndexOf(Engines, f.Engine)))
                md.AppendLine(CultureInfo.InvariantCulture, $"| {model.Name} ({Parameters(model.Parameters)}) | {f.Streams} | {f.Engine} | {F(f.OutputTokensPerSecond)} | {F(f.ItlP50Ms)} ms | {F(f.TtftP50Ms, "F0")} ms | {F(f.TtftP90Ms, "F0")} ms |");
        }
        md.AppendLine().AppendLine("Ours over the fastest peer (output tokens/s):").AppendLine();
        md.AppendLine("| model | streams | ours / best peer | best peer |");
        md.AppendLine("|---|---:|---:|---|");
        foreach (var model in models)
        {
            foreach (var (streams, ratio, peer) in model.Lead())
                md.AppendLine(CultureInfo.InvariantCulture, $"| {model.Name} | {streams} | {F(ratio, "F2")}x | {peer} |");
        }
        md.AppendLine().AppendLine("## Models").AppendLine();
        foreach (var model in models)
            md.AppendLine(CultureInfo.InvariantCulture, $"- {model.Name}: {Parameters(model.Parameters)} parameters, {model.Config}");
        if (notes.Count > 0)
        {
            md.AppendLine().AppendLine("## Notes").AppendLine();
            foreach (var note in notes)
                md.AppendLine(CultureInfo.InvariantCulture, $"- {note}");
        }
        return md.ToString();
    }

    private static string Html(string title, List<ModelFigures> models, PromptSet settings, IReadOnlyList<string> notes)
    {
        var html = new StringBuilder();
        html.AppendLine(CultureInfo.InvariantCulture, $"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{Escape(title)}</title>");
        html.AppendLine("<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:75em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}td:nth-child(2),th:nth-child(2){text-align:left}svg{margin:0 1em 1em 0}</style></head><body>");
        html.AppendLine(CultureInfo.InvariantCulture, $"<h1>{Escape(title)}</h1><p>Prompt {settings.PromptTokens} tokens, {settings.OutputTokens} new tokens, greedy, same prompt tokens and same weights for every engine.</p>");
        html.Append("<p>");
        for (var i = 0; i < Engines.Length; i++)
            html.Append(CultureInfo.InvariantCulture, $"<span style=\"color:{Colors[i]}\">&#9632;</span> {Engines[i]} &nbsp; ");
        html.AppendLine("</p>");
        foreach (var model in models)
        {
            html.AppendLine(CultureInfo.InvariantCulture, $"<h2>{Escape(model.Name)} ({Parameters(model.Parameters)} parameters)</h2><div>");
            html.Append(Chart("output tokens/s (higher is better)", model, f => f.OutputTokensPerSecond));
            html.Append(Chart("ITL p50, ms (lower is better)", model, f => f.ItlP50Ms));
            html.Append(Chart("TTFT p50, ms (lower is better)", model, f => f.TtftP50Ms));
            html.AppendLine("</div><table><tr><th>streams</th><th>engine</th><th>output tok/s</th><th>ITL p50 ms</th><th>TTFT p50 ms</th><th>TTFT p90 ms</th></tr>");
            foreach (var f in model.Figures.OrderBy(f => f.Streams).ThenBy(f => Array.IndexOf(Engines, f.Engine)))
                html.AppendLine(CultureInfo.InvariantCulture, $"<tr><td>{f.Streams}</td><td>{f.Engine}</td><td>{F(f.OutputTokensPerSecond)}</td><td>{F(f.ItlP50Ms)}</td><td>{F(f.TtftP50Ms, "F0")}</td><td>{F(f.TtftP90Ms, "F0")}</td></tr>");
            html.AppendLine("</table>");
        }
        if (notes.Count > 0)
        {
            html.AppendLine("<h2>Notes</h2><ul>");
            foreach (var note in notes)
                html.AppendLine(CultureInfo.InvariantCulture, $"<li>{Escape(note)}</li>");
            html.AppendLine("</ul>");
        }
        html.AppendLine("</body></html>");
        return html.ToString();
    }

    // Grouped bars: one group per stream count, one bar per engine, labelled with its value.
    private static string Chart(string caption, ModelFigures model, Func<EngineFigures, double> value)
    {
        const int Width = 360, Height = 220, Left = 10, Bottom = 30, Top = 30, Bar = 26, Gap = 18;
        var groups = model.Figures.GroupBy(f => f.Streams).OrderBy(g => g.Key).ToList();
        var max = model.Figures.Max(value);
        var svg = new StringBuilder();
        svg.Append(CultureInfo.InvariantCulture, $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{Width}\" height=\"{Height}\" font-size=\"10\">");
        svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{Left}\" y=\"14\" font-size=\"12\" font-weight=\"bold\">{Escape(caption)}</text>");
        var x = Left;
        foreach (var group in groups)
        {
            var groupStart = x;
            for (var e = 0; e < Engines.Length; e++)
            {
                var figure = group.SingleOrDefault(f => f.Engine == Engines[e]);
                if (figure is not null)
                {
                    var v = value(figure);
                    var h = max > 0 ? v / max * (Height - Top - Bottom) : 0;
                    var y = Height - Bottom - h;
                    svg.Append(CultureInfo.InvariantCulture, $"<rect x=\"{x}\" y=\"{F(y)}\" width=\"{Bar - 2}\" height=\"{F(h)}\" fill=\"{Colors[e]}\"><title>{Engines[e]}: {F(v)}</title></rect>");
                    svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{x + (Bar - 2) / 2}\" y=\"{F(y - 3)}\" text-anchor=\"middle\" font-size=\"8\">{F(v, v >= 100 ? "F0" : "F1")}</text>");
                }
                x += Bar;
            }
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{(groupStart + x) / 2}\" y=\"{Height - Bottom + 14}\" text-anchor=\"middle\">{group.Key} stream{(group.Key == 1 ? "" : "s")}</text>");
            x += Gap;
        }
        svg.Append(CultureInfo.InvariantCulture, $"<line x1=\"{Left}\" y1=\"{Height - Bottom}\" x2=\"{x - Gap}\" y2=\"{Height - Bottom}\" stroke=\"#333\"/></svg>");
        return svg.ToString();
    }

    private static string Escape(string text) => System.Net.WebUtility.HtmlEncode(text);
}
