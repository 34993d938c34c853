using InferenceServer.LoadGenerator.Reports;

namespace InferenceServer.LoadGenerator.Measurement;

/// <summary>Turns the records of one level into its figures.</summary>
public static class LevelSummary
{
    public static LevelReport Build(
        string label,
        double value,
        IReadOnlyCollection<RequestRecord> records,
        TimeSpan wall,
        string counterSource,
        EngineCounts? before,
        EngineCounts? after,
        IReadOnlyList<double>? cancelToFree,
        IReadOnlyList<double>? iterationMs = null)
    {
        ArgumentNullException.ThrowIfNull(records);
        var completed = records.Where(r => r.Outcome == RequestOutcome.Completed).ToList();
        var cancelled = records.Where(r => r.Outcome == RequestOutcome.Cancelled).ToList();
        var failed = records.Where(r => r.Outcome == RequestOutcome.Failed).ToList();
        // An editor shows the first tokens of a suggestion even when the next keystroke cancels the
        // rest: latency covers every request that got a first token, completed or cancelled after it.
        var withFirstToken = WithFirstToken(records).ToList();
        var cancelledAfterFirst = cancelled.Count(r => r.TimeToFirstTokenMs is not null);
        var seconds = Math.Max(wall.TotalSeconds, 1e-9);
        // Tokens streamed to cancelled requests were generated and delivered too: they count toward throughput.
        long outputTokens = records.Where(r => r.Outcome != RequestOutcome.Failed).Sum(r => (long)r.OutputTokens);
        var withUsage = completed.Where(r => r.PromptTokens is > 0).ToList();
        long promptTokens = withUsage.Sum(r => (long)r.PromptTokens!.Value);
        long cachedTokens = withUsage.Sum(r => (long)(r.CachedPromptTokens ?? 0));
        var reportsCache = withUsage.Any(r => r.CachedPromptTokens is not null);
        var drafted = before is not null && after is not null ? after.DraftedTokens - before.DraftedTokens : 0;

        return new LevelReport
        {
            Label = label,
            Value = value,
            WallSeconds = wall.TotalSeconds,
            Requests = records.Count,
            Completed = completed.Count,
            Cancelled = cancelled.Count,
            CancelledAfterFirstToken = cancelledAfterFirst,
            CancelledBeforeFirstToken = cancelled.Count - cancelledAfterFirst,
            Failed = failed.Count,
            ErrorsByStatus = failed.GroupBy(r => r.ErrorKey ?? "unknown").OrderBy(g => g.Key, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.Count()),
            FirstError = failed.FirstOrDefault() is { } first ? $"{first.ErrorKey}: {first.ErrorMessage}" : null,
            TimeToFirstTokenMs = Percentiles.Summarize(withFirstToken.Select(r => r.TimeToFirstTokenMs!.Value)),
            InterTokenMs = Percentiles.Summarize(withFirstToken.Where(r => r.InterTokenMs is not null).Select(r => r.InterTokenMs!.Value)),
            EndToEndMs = Percentiles.Summarize(completed.Select(r => r.EndMs)),
            OutputTokens = outputTokens,
            OutputTokensPerSecond = outputTokens / seconds,
            RequestsPerSecond = completed.Count / seconds,
            MeanPromptTokens = withUsage.Count > 0 ? (double)promptTokens / withUsage.Count : null,
            PromptTokens = promptTokens,
            CachedPromptTokens = cachedTokens,
            PrefixCacheShare = reportsCache && promptTokens > 0 ? (double)cachedTokens / promptTokens : null,
            Cancellation = Cancellation(cancelled, wall, counterSource, before, after, cancelToFree),
            IterationMs = iterationMs is { Count: > 0 } ? Percentiles.Summarize(iterationMs) : null,
            InterruptedPrefills = before is not null && after is not null ? after.InterruptedPrefills - before.InterruptedPrefills : null,
            DraftedTokens = drafted > 0 ? drafted : null,
            AcceptedTokens = drafted > 0 ? after!.AcceptedTokens - before!.AcceptedTokens : null,
        };
    }

    /// <summary>The requests whose latency counts: completed or cancelled, with a first token before they ended.</summary>
    public static IEnumerable<RequestRecord> WithFirstToken(IEnumerable<RequestRecord> records)
    {
        ArgumentNullException.ThrowIfNull(records);
        return records.Where(r => r.Outcome != RequestOutcome.Failed && r.TimeToFirstTokenMs is not null);
    }

    private static CancellationFigures Cancellation(List<RequestRecord> cancelled, TimeSpan wall, string source, EngineCounts? before, EngineCounts? after,
        IReadOnlyList<double>? cancelToFree)
    {
        var counted = before is not null && after is not null;
        long? server = counted ? after!.Cancellations - before!.Cancellations : null;
        long? late = counted ? after!.LateCancellations - before!.LateCancellations : null;
        long? iterations = counted ? after!.Iterations - before!.Iterations : null;
        return new CancellationFigures
        {
            ClientCancelled = cancelled.Count,
            ClientCancelToReturnMs = Percentiles.Summarize(cancelled.Where(r => r.CancelToReturnMs is not null).Select(r => r.CancelToReturnMs!.Value)),
            ServerSource = counted ? source : "n/a",
            ServerCancellations = server,
            ServerLateCancellations = late,
            FreedWithinOneIterationShare = server is > 0 ? 1.0 - (double)late!.Value / server.Value : null,
            MeanIterationMs = iterations is > 0 ? wall.TotalMilliseconds / iterations.Value : null,
            CancelToFreeMs = cancelToFree is { Count: > 0 } ? Percentiles.Summarize(cancelToFree) : null,
        };
    }
}
