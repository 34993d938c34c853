using InferenceServer.Engine.Speculation;

namespace InferenceServer.Engine.Tests;

public sealed class PromptLookupDrafterTests
{
    private static int[] Propose(PromptLookupDrafter drafter, int[] history, int count)
    {
        var draft = new int[count];
        return draft[..drafter.Propose(history, draft)];
    }

    private static int[] ProposeFresh(int[] history, int count, int maxNgram = 3, int minNgram = 1)
    {
        using var drafter = new PromptLookupDrafter(maxNgram, minNgram);
        return Propose(drafter, history, count);
    }

    [Fact]
    public void Nothing_is_proposed_when_no_suffix_occurred_before()
    {
        Assert.Empty(ProposeFresh([1, 2, 3, 4, 5], 4));
        Assert.Empty(ProposeFresh([7], 4));
        Assert.Empty(ProposeFresh([], 4));
    }

    [Fact]
    public void The_tokens_after_the_most_recent_earlier_occurrence_are_proposed()
    {
        // "5 6 7" occurs twice before the end: the later one (followed by 30 31) wins.
        int[] history = [5, 6, 7, 20, 21, 9, 5, 6, 7, 30, 31, 9, 5, 6, 7];
        Assert.Equal([30, 31, 9, 5], ProposeFresh(history, 4));
        Assert.Equal([30, 31], ProposeFresh(history, 2));
    }

    [Fact]
    public void The_longest_matching_suffix_wins_over_a_more_recent_shorter_one()
    {
        // The last token 7 occurred most recently before 40, but "5 6 7" only before 20.
        int[] history = [5, 6, 7, 20, 21, 8, 7, 40, 41, 5, 6, 7];
        Assert.Equal([20, 21], ProposeFresh(history, 2));
        // Looking at two tokens at most: "6 7" also occurred only before 20.
        Assert.Equal([20, 21], ProposeFresh(history, 2, maxNgram: 2));
        // One token: the most recent 7.
        Assert.Equal([40, 41], ProposeFresh(history, 2, maxNgram: 1));
    }

    [Fact]
    public void The_length_of_the_matched_suffix_is_reported()
    {
        using var drafter = new PromptLookupDrafter();
        var draft = new int[2];
        Assert.Equal(2, drafter.Propose([5, 6, 7, 20, 21, 8, 7, 40, 41, 5, 6, 7], draft, out var matched));
        Assert.Equal(3, matched);
        drafter.Reset();
        Assert.Equal(2, drafter.Propose([1, 2, 3, 9, 9, 4, 2, 3], draft, out matched));
        Assert.Equal(2, matched);
        drafter.Reset();
        Assert.Equal(0, drafter.Propose([1, 2, 3], draft, out matched));
        Assert.Equal(0, matched);
    }

    [Fact]
    public void Shorter_suffixes_are_tried_down_to_the_minimum()
    {
        int[] history = [1, 2, 3, 9, 9, 4, 2, 3];
        Assert.Equal([9, 9], ProposeFresh(history, 2)); // "2 3" matches, "4 2 3" does not
        Assert.Equal([9, 9], ProposeFresh(history, 2, minNgram: 2));
        Assert.Empty(ProposeFresh(history, 2, minNgram: 3));
        Assert.Empty(ProposeFresh([1, 5, 2, 6, 1], 2, minNgram: 2)); // only the single token 1 repeats
    }

    [Fact]
    public void A_draft_that_reaches_the_end_carries_on_the_repeating_pattern()
    {
        // "a b c a b": the last "a b" follows the first; after it comes "c a b", then the draft itself.
        int[] history = [1, 2, 3, 1, 2];
        Assert.Equal([3, 1, 2, 3, 1, 2, 3], ProposeFresh(history, 7));
        // A run of one token proposes more of it.
        Assert.Equal([4, 4, 4, 4], ProposeFresh([8, 4, 4, 4], 4));
    }

    [Fact]
    public void Growing_the_history_one_token_at_a_time_proposes_what_a_scan_finds()
    {
        // A small alphabet makes many repeats and collisions; 3,000 tokens make the table grow.
        var random = new Random(5);
        var history = new List<int>();
        using var drafter = new PromptLookupDrafter(maxNgram: 3, minNgram: 1);
        var draft = new int[5];
        for (var step = 0; step < 3000; step++)
        {
            history.Add(random.Next(0, step % 500 < 250 ? 4 : 40));
            var tokens = history.ToArray();
            var count = drafter.Propose(tokens, draft);
            Assert.Equal(Scan(tokens, 5, 3, 1), draft[..count]);
        }
        Assert.Equal(3000, drafter.IndexedLength);
    }

    // The definition, by brute force: for n from max down to min, the latest start s < L - n
    // with history[s..s+n) equal to the last n tokens; copy from s + n on, overlapping the draft.
    private static int[] Scan(int[] history, int count, int maxNgram, int minNgram)
    {
        var length = history.Length;
        for (var n = Math.Min(maxNgram, length - 1); n >= minNgram; n--)
        {
            for (var start = length - n - 1; start >= 0; start--)
            {
                if (!history.AsSpan(start, n).SequenceEqual(history.AsSpan(length - n, n)))
                    continue;
                var draft = new int[count];
                for (var i = 0; i < count; i++)
                {
                    var source = start + n + i;
                    draft[i] = source < length ? history[source] : draft[source - length];
                }
                return draft;
            }
        }
        return [];
    }

    [Fact]
    public void Proposing_as_the_history_grows_allocates_nothing_once_the_table_is_large_enough()
    {
        var random = new Random(6);
        var history = Enumerable.Range(0, 600).Select(_ => random.Next(0, 30)).ToArray();
        using var drafter = new PromptLookupDrafter(expectedLength: history.Length);
        var draft = new int[8];
        drafter.Propose(history.AsSpan(0, 100), draft);
        var before = GC.GetAllocatedBytesForCurrentThread();
        var proposed = 0;
        for (var length = 101; length <= history.Length; length++)
            proposed += drafter.Propose(history.AsSpan(0, length), draft);
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
        Assert.True(proposed > 0);
    }

    [Fact]
    public void A_history_that_shrinks_is_refused_and_reset_starts_a_new_sequence()
    {
        using var drafter = new PromptLookupDrafter();
        var draft = new int[3];
        drafter.Propose([1, 2, 3, 1, 2], draft);
        var error = Assert.Throws<ArgumentException>(() => drafter.Propose([1, 2], draft));
        Assert.Contains("Reset", error.Message, StringComparison.Ordinal);

        drafter.Reset();
        Assert.Equal(0, drafter.Propose([9, 8, 7], draft));
        Assert.Equal(2, drafter.Propose([9, 8, 7, 9, 8], draft.AsSpan(0, 2)));
        Assert.Equal([7, 9], draft[..2]);
    }

    [Fact]
    public void Bad_settings_are_refused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new PromptLookupDrafter(maxNgram: 0, minNgram: 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => new PromptLookupDrafter(maxNgram: 2, minNgram: 3));
        Assert.Throws<ArgumentOutOfRangeException>(() => new PromptLookupDrafter(maxNgram: PromptLookupDrafter.NgramLimit + 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => new PromptLookupDrafter(expectedLength: -1));
        var drafter = new PromptLookupDrafter();
        drafter.Dispose();
        Assert.Throws<ObjectDisposedException>(() => drafter.Propose([1, 1], new int[2]));
    }
}
