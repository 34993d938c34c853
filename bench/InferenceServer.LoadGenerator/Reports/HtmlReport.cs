using System.Net;
using System.Text;

namespace InferenceServer.LoadGenerator.Reports;

/// <summary>
/// report.html: one self-contained page (inline style, inline SVG charts, no scripts, nothing
/// fetched), so it opens offline and can be attached or archived as one file.
/// </summary>
public static class HtmlReport
{
    private const string Style = """
        body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1400px; }
        table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; }
        th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
        th { background: #f3f3f3; }
        td:first-child, th:first-child { text-align: left; }
        caption { text-align: left; color: #555; padding-bottom: 4px; }
        .notes { color: #555; font-size: 13px; }
        svg { border: 1px solid #ddd; margin: 0.5em 1em 1em 0; background: #fff; }
        """;

    public static string Render(BenchmarkReport report)
    {
        ArgumentNullException.ThrowIfNull(report);
        var html = new StringBuilder();
        html.AppendLine("<!DOCTYPE html>");
        html.AppendLine("<html lang=\"en\"><head><meta charset=\"utf-8\">");
        html.AppendLine($"<title>Load generator report: {E(report.Target)}</title>");
        html.AppendLine($"<style>{Style}</style></head><body>");
        html.AppendLine("<h1>Load generator report</h1>");
        html.AppendLine("<div>");
        html.AppendLine(SvgCharts.LatencyThroughput(report));
        html.AppendLine(SvgCharts.TimeToFirstToken(report));
        html.AppendLine("</div>");
        foreach (var table in ReportTables.Build(report))
        {
            html.AppendLine($"<h2>{E(table.Title)}</h2>");
            html.Append("<table>");
            if (table.Caption is not null)
                html.Append($"<caption>{E(table.Caption)}</caption>");
            if (table.Headers.Any(h => h.Length > 0))
                html.Append("<tr>").Append(string.Concat(table.Headers.Select(h => $"<th>{E(h)}</th>"))).Append("</tr>");
            foreach (var row in table.Rows)
                html.Append("<tr>").Append(string.Concat(row.Select(c => $"<td>{E(c)}</td>"))).Append("</tr>");
            html.AppendLine("</table>");
            if (table.Footnotes.Count > 0)
                html.AppendLine("<ul class=\"notes\">" + string.Concat(table.Footnotes.Select(n => $"<li>{E(n)}</li>")) + "</ul>");
        }
        html.AppendLine("<p class=\"notes\">TTFT: time to first token. ITL: inter-token latency, per request (last token - first token) / (tokens after the first), "
            + "summarized over requests. Both cover every request that got a first token, completed or cancelled after it (a cancelled one with the tokens it saw "
            + "before its cancellation); cancelled (after / before 1st token) splits the cancelled requests by whether a first token came first. End-to-end: from sending to the end of the stream, over completed requests. Prefix cache: cached prompt tokens / prompt tokens, from the usage servers report. "
            + "Figures for all levels are in report.json beside this file.</p>");
        html.AppendLine("</body></html>");
        return html.ToString();
    }

    private static string E(string text) => WebUtility.HtmlEncode(text);
}
