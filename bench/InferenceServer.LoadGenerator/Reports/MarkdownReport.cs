using System.Text;

namespace InferenceServer.LoadGenerator.Reports;

/// <summary>report.md: the summary tables in Markdown.</summary>
public static class MarkdownReport
{
    public static string Render(BenchmarkReport report)
    {
        var text = new StringBuilder();
        text.AppendLine("# Load generator report").AppendLine();
        foreach (var table in ReportTables.Build(report))
        {
            text.AppendLine("## " + table.Title).AppendLine();
            if (table.Caption is not null)
                text.AppendLine(table.Caption).AppendLine();
            text.AppendLine("| " + string.Join(" | ", table.Headers.Select(Cell)) + " |");
            text.AppendLine("|" + string.Concat(table.Headers.Select((_, i) => i == 0 ? "---|" : "---:|")));
            foreach (var row in table.Rows)
                text.AppendLine("| " + string.Join(" | ", row.Select(Cell)) + " |");
            text.AppendLine();
            foreach (var note in table.Footnotes)
                text.AppendLine("- " + note);
            if (table.Footnotes.Count > 0)
                text.AppendLine();
        }
        return text.ToString();
    }

    private static string Cell(string value) => value.Replace("|", "\\|", StringComparison.Ordinal).Replace("\n", " ", StringComparison.Ordinal);
}
