using System.Diagnostics;
using InferenceServer.LoadGenerator.Reports;
using InferenceServer.Tests;

namespace InferenceServer.LoadGenerator.Tests;

/// <summary>
/// The HTML report as a browser sees it: headless Chromium loads the file offline and the DOM it
/// builds holds both charts. Skipped, with the reason, where Chromium is not installed (.ci/run installs it).
/// </summary>
public sealed class BrowserTests
{
    [ChromiumFact]
    public void Headless_chromium_renders_the_report_with_both_charts()
    {
        using var temp = new TempFolder();
        var path = temp.Combine("report.html");
        File.WriteAllText(path, HtmlReport.Render(ReportTests.SampleReport()));

        var start = new ProcessStartInfo(ChromiumFactAttribute.Browser!)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        // No network, no sandbox (tests may run as root in containers), a throwaway profile.
        foreach (var argument in new[] { "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", $"--user-data-dir={temp.Combine("profile")}", "--dump-dom", new Uri(path).AbsoluteUri })
            start.ArgumentList.Add(argument);
        using var browser = Process.Start(start)!;
        var dom = browser.StandardOutput.ReadToEndAsync();
        var errors = browser.StandardError.ReadToEndAsync();
        Assert.True(browser.WaitForExit(TimeSpan.FromSeconds(60)), "chromium did not finish");
        Assert.True(browser.ExitCode == 0, $"chromium failed: {errors.Result}");
        foreach (var chart in new[] { "chart-latency-throughput", "chart-ttft" })
            Assert.Matches($"<svg[^>]*id=\"{chart}\"", dom.Result);
        Assert.Contains("<rect", dom.Result, StringComparison.Ordinal); // the histogram's bars were drawn
    }
}

public sealed class ChromiumFactAttribute : FactAttribute
{
    public static readonly string? Browser = new[] { "/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome" }.FirstOrDefault(File.Exists);

    public ChromiumFactAttribute()
    {
        if (Browser is null)
            Skip = "Chromium is not installed (apt-get install chromium)";
    }
}
