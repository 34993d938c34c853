using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using InferenceServer.LoadGenerator.Measurement;
using InferenceServer.LoadGenerator.Reports;

namespace InferenceServer.LoadGenerator.Scenarios;

/// <summary>
/// What every level of every workload does around its requests: read the engine's counters
/// before and after, keep the progress line moving, time the level, and summarize the records.
/// </summary>
public static class LevelRunner
{
    public static async Task<(LevelReport Report, RequestRecord[] Records)> MeasureAsync(
        string label,
        double value,
        IEngineCounters? counters,
        IProgressLine line,
        Func<double> fractionDone,
        Func<ConcurrentQueue<RequestRecord>, Task> body,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(line);
        ArgumentNullException.ThrowIfNull(fractionDone);
        ArgumentNullException.ThrowIfNull(body);
        var before = counters is null ? null : await counters.ReadAsync(cancellationToken).ConfigureAwait(false);
        counters?.TakeCancelToFree();
        counters?.TakeIterationTimes();
        var records = new ConcurrentQueue<RequestRecord>();
        var started = Stopwatch.GetTimestamp();
        using var ticker = new CancellationTokenSource();
        var ticking = TickAsync(line, fractionDone, ticker.Token);
        try
        {
            await body(records).ConfigureAwait(false);
        }
        finally
        {
            await ticker.CancelAsync().ConfigureAwait(false);
            await ticking.ConfigureAwait(false);
        }
        var wall = Stopwatch.GetElapsedTime(started);
        EngineCounts? after = null;
        if (counters is not null)
            after = await SettledAsync(counters, cancellationToken).ConfigureAwait(false);
        var report = LevelSummary.Build(label, value, records, wall, counters?.Source ?? "n/a", before, after, counters?.TakeCancelToFree(), counters?.TakeIterationTimes());
        line.Complete(Brief(report));
        return (report, records.ToArray());
    }

    /// <summary>Time to first token of every request that got one (completed or cancelled after it), binned for the report's chart.</summary>
    public static Histogram? TimeToFirstToken(IEnumerable<RequestRecord> records) =>
        Histogram.Of(LevelSummary.WithFirstToken(records).Select(r => r.TimeToFirstTokenMs!.Value).ToArray(), 25, "ms");

    /// <summary>
    /// The counts once the engine has released what the level left behind (cancelled sequences
    /// are freed at its next iteration), waiting at most two seconds.
    /// </summary>
    private static async Task<EngineCounts?> SettledAsync(IEngineCounters counters, CancellationToken cancellationToken)
    {
        var deadline = Stopwatch.GetTimestamp() + Stopwatch.Frequency * 2;
        while (true)
        {
            var counts = await counters.ReadAsync(cancellationToken).ConfigureAwait(false);
            if (counts is null || (counts.Running == 0 && counts.Waiting == 0) || Stopwatch.GetTimestamp() > deadline)
                return counts;
            await Task.Delay(20, cancellationToken).ConfigureAwait(false);
        }
    }

    private static async Task TickAsync(IProgressLine line, Func<double> fractionDone, CancellationToken cancellationToken)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(250));
        try
        {
            while (await timer.WaitForNextTickAsync(cancellationToken).ConfigureAwait(false))
                line.Report(fractionDone());
        }
        catch (OperationCanceledException)
        {
        }
    }

    /// <summary>A one-line result for the progress display.</summary>
    public static string Brief(LevelReport level)
    {
        ArgumentNullException.ThrowIfNull(level);
        var text = string.Create(CultureInfo.InvariantCulture,
            $"{level.Completed} ok, {level.OutputTokensPerSecond:F1} tok/s, TTFT p50 {Ms(level.TimeToFirstTokenMs?.P50)}, ITL p50 {Ms(level.InterTokenMs?.P50)}");
        if (level.Cancelled > 0)
            text += string.Create(CultureInfo.InvariantCulture, $", {level.Cancelled} cancelled ({level.CancelledAfterFirstToken} after a first token)");
        if (level.Failed > 0)
            text += string.Create(CultureInfo.InvariantCulture, $", {level.Failed} failed ({level.FirstError})");
        return text;
    }

    private static string Ms(double? value) => value is { } v ? v.ToString("F1", CultureInfo.InvariantCulture) + " ms" : "n/a";

    /// <summary>Fraction of a time-bounded (and optionally count-bounded) level that is done.</summary>
    public static double Fraction(long started, TimeSpan duration, int? maxRequests, Func<int> issued)
    {
        ArgumentNullException.ThrowIfNull(issued);
        var byTime = duration > TimeSpan.Zero ? Stopwatch.GetElapsedTime(started) / duration : 0;
        var byCount = maxRequests is > 0 ? (double)issued() / maxRequests.Value : 0;
        return Math.Min(1, Math.Max(byTime, byCount));
    }
}
