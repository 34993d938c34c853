using System.Globalization;
using System.Net;

namespace InferenceServer.Server.Tests;

/// <summary>One GET /metrics: each metric's # TYPE, and each sample line as series (name with labels) and value.</summary>
public sealed class MetricsScrape
{
    private MetricsScrape(string text)
    {
        Text = text;
        foreach (var line in text.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            if (line.StartsWith("# TYPE ", StringComparison.Ordinal))
            {
                var parts = line.Split(' ');
                Types.Add(parts[2], parts[3]);
            }
            else if (!line.StartsWith('#'))
            {
                var space = line.LastIndexOf(' ');
                Samples.Add(line[..space], double.Parse(line[(space + 1)..], CultureInfo.InvariantCulture));
            }
        }
    }

    public string Text { get; }
    public Dictionary<string, string> Types { get; } = new(StringComparer.Ordinal);
    public Dictionary<string, double> Samples { get; } = new(StringComparer.Ordinal);

    public double this[string series] =>
        Samples.TryGetValue(series, out var value) ? value : throw new KeyNotFoundException($"no series {series} in:\n{Text}");

    public static async Task<MetricsScrape> GetAsync(HttpClient client)
    {
        using var response = await client.GetAsync("/metrics");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/plain; version=0.0.4; charset=utf-8", response.Content.Headers.ContentType!.ToString());
        return new MetricsScrape(await response.Content.ReadAsStringAsync());
    }

    /// <summary>A histogram's buckets in order, after checking that they are cumulative and end at its count.</summary>
    public List<double> AssertBuckets(string name, string labels)
    {
        var prefix = $"{name}_bucket{{{labels},le=\"";
        var buckets = Samples.Where(p => p.Key.StartsWith(prefix, StringComparison.Ordinal)).Select(p => p.Value).ToList();
        Assert.True(buckets.Count > 1, $"no buckets for {name}{{{labels}}}");
        Assert.Equal(buckets.Order(), buckets);
        Assert.Equal(this[$"{name}_count{{{labels}}}"], this[prefix + "+Inf\"}"]);
        return buckets;
    }
}
