using InferenceServer.Engine.Kv;

namespace InferenceServer.Engine.Tests;

/// <summary>
/// Block accounting for the paged pool: tables, prefix sharing by chained block hashes,
/// reference counts, the least-recently-used cache of released blocks, and that every block
/// comes back.
/// </summary>
public sealed class PagedKvCacheTests
{
    private const int Block = 4;

    private static int[] Tokens(int count, int start = 100) => Enumerable.Range(start, count).ToArray();

    // A sequence that ran a prompt: blocks for it, computed, as the engine does after prefill.
    private static PagedSequence Run(PagedKvCache cache, int[] prompt, int maxBlocks = 64)
    {
        var sequence = new PagedSequence(maxBlocks);
        cache.AttachPrefix(sequence, prompt);
        Assert.True(cache.EnsureCapacity(sequence, prompt.Length));
        cache.Computed(sequence, prompt);
        return sequence;
    }

    [Fact]
    public void Blocks_computed_with_an_adapter_are_found_only_by_prompts_of_that_adapter()
    {
        var cache = new PagedKvCache(16, Block);
        var prompt = Tokens(10);
        var first = new PagedSequence(16);
        cache.AttachPrefix(first, prompt, adapter: 3);
        Assert.True(cache.EnsureCapacity(first, prompt.Length));
        cache.Computed(first, prompt);
        Assert.Equal(2, first.RegisteredBlocks);

        Assert.Equal(0, cache.AttachPrefix(new PagedSequence(16), prompt)); // the base model
        Assert.Equal(0, cache.AttachPrefix(new PagedSequence(16), prompt, adapter: 4));
        var same = new PagedSequence(16);
        Assert.Equal(8, cache.AttachPrefix(same, prompt, adapter: 3));
        Assert.Equal(first.Blocks[..2].ToArray(), same.Blocks.ToArray());
        cache.Release(same);
        cache.Release(first);
        Assert.Equal(0, cache.UsedBlocks);
    }

    [Fact]
    public void A_fresh_sequence_gets_distinct_blocks_covering_its_tokens()
    {
        var cache = new PagedKvCache(totalBlocks: 8, Block);
        var sequence = new PagedSequence(8);
        Assert.Equal(0, cache.AttachPrefix(sequence, Tokens(10)));
        Assert.True(cache.EnsureCapacity(sequence, 10));
        Assert.Equal(3, sequence.BlockCount);
        Assert.Equal(3, sequence.Blocks.ToArray().Distinct().Count());
        Assert.Equal(3, cache.UsedBlocks);
        Assert.Equal(5, cache.AvailableBlocks);
        // Growing within the last block needs nothing; past it, one more block.
        Assert.True(cache.EnsureCapacity(sequence, 12));
        Assert.Equal(3, sequence.BlockCount);
        Assert.True(cache.EnsureCapacity(sequence, 13));
        Assert.Equal(4, sequence.BlockCount);
    }

    [Fact]
    public void Two_running_sequences_share_the_full_blocks_of_a_common_prefix()
    {
        var cache = new PagedKvCache(16, Block);
        var prompt = Tokens(10); // two full blocks and a partial one
        var first = Run(cache, prompt);
        Assert.Equal(2, first.RegisteredBlocks);

        var second = new PagedSequence(16);
        Assert.Equal(8, cache.AttachPrefix(second, prompt));
        Assert.Equal(first.Blocks[..2].ToArray(), second.Blocks.ToArray());
        Assert.Equal(2, cache.ReferenceCount(first.Blocks[0]));
        Assert.True(cache.EnsureCapacity(second, prompt.Length));
        // The partial block is never shared: each sequence writes its own.
        Assert.NotEqual(first.Blocks[2], second.Blocks[2]);
        Assert.Equal(4, cache.UsedBlocks);
    }

    [Fact]
    public void A_released_prefix_stays_cached_and_the_next_prompt_that_shares_it_skips_it()
    {
        var cache = new PagedKvCache(16, Block);
        var first = Run(cache, Tokens(10));
        var shared = first.Blocks[..2].ToArray();
        cache.Release(first);
        Assert.Equal(0, cache.UsedBlocks);
        Assert.Equal(2, cache.CachedBlocks);
        Assert.Equal(16, cache.AvailableBlocks);

        // The next keystroke: same start, different end.
        var next = new PagedSequence(16);
        var prompt = Tokens(8).Concat([7, 7, 7, 7, 7]).ToArray();
        Assert.Equal(8, cache.AttachPrefix(next, prompt));
        Assert.Equal(shared, next.Blocks.ToArray());
        Assert.Equal(0, cache.CachedBlocks);
        Assert.Equal(2, cache.UsedBlocks);
    }

    [Fact]
    public void The_match_stops_at_the_first_block_that_differs()
    {
        var cache = new PagedKvCache(16, Block);
        cache.Release(Run(cache, Tokens(12)));
        var prompt = Tokens(12);
        prompt[5] = -1; // inside the second block
        var sequence = new PagedSequence(16);
        Assert.Equal(4, cache.AttachPrefix(sequence, prompt));
    }

    [Fact]
    public void Equal_block_contents_after_a_different_prefix_do_not_match()
    {
        // The hash chains through everything before a block: the same four tokens at the same
        // position after another first block are other KV (attention saw other keys).
        var cache = new PagedKvCache(16, Block);
        cache.Release(Run(cache, [1, 2, 3, 4, 5, 6, 7, 8, 9]));
        var sequence = new PagedSequence(16);
        Assert.Equal(0, cache.AttachPrefix(sequence, [9, 9, 9, 9, 5, 6, 7, 8, 9]));
    }

    [Fact]
    public void The_last_prompt_token_is_always_computed()
    {
        // A prompt that is exactly two cached blocks reuses only the first: the logits of its
        // last token come from running it.
        var cache = new PagedKvCache(16, Block);
        cache.Release(Run(cache, Tokens(9)));
        var sequence = new PagedSequence(16);
        Assert.Equal(4, cache.AttachPrefix(sequence, Tokens(8)));
        Assert.Equal(8, cache.AttachPrefix(new PagedSequence(16), Tokens(9)));
    }

    [Fact]
    public void Out_of_blocks_the_least_recently_released_cache_goes_first()
    {
        var cache = new PagedKvCache(4, Block);
        var older = Run(cache, Tokens(5, start: 0));   // registers block [0..4)
        var newer = Run(cache, Tokens(5, start: 50));  // registers block [50..54)
        cache.Release(older);
        cache.Release(newer);
        Assert.Equal(2, cache.CachedBlocks);

        // Needs three of the four: both empty blocks and the oldest cached one.
        var big = new PagedSequence(8);
        Assert.True(cache.EnsureCapacity(big, 12));
        Assert.Equal(1, cache.CachedBlocks);
        Assert.Equal(0, cache.AttachPrefix(new PagedSequence(8), Tokens(5, start: 0)));
        var probe = new PagedSequence(8);
        Assert.Equal(4, cache.AttachPrefix(probe, Tokens(5, start: 50)));
        cache.Release(probe);
    }

    [Fact]
    public void A_prefix_loses_its_tail_before_its_head()
    {
        // Released blocks enter the cache last block first, so reclaiming takes the tail of a
        // prefix and the shorter prefix stays findable.
        var cache = new PagedKvCache(4, Block);
        cache.Release(Run(cache, Tokens(13))); // three full blocks cached, one block empty
        var sequence = new PagedSequence(8);
        Assert.True(cache.EnsureCapacity(sequence, 8)); // the empty block and one cached block
        Assert.Equal(8, cache.AttachPrefix(new PagedSequence(8), Tokens(13)));
    }

    [Fact]
    public void Not_enough_blocks_changes_nothing()
    {
        var cache = new PagedKvCache(4, Block);
        var holder = Run(cache, Tokens(12)); // three blocks held
        var sequence = new PagedSequence(8);
        Assert.False(cache.EnsureCapacity(sequence, 8));
        Assert.Equal(0, sequence.BlockCount);
        Assert.Equal(3, cache.UsedBlocks);
        Assert.Equal(1, cache.AvailableBlocks);
        // Nor past the sequence's own table.
        var small = new PagedSequence(1);
        Assert.False(cache.EnsureCapacity(small, 5));
        Assert.Equal(0, small.BlockCount);
        cache.Release(holder);
    }

    [Fact]
    public void Content_computed_twice_side_by_side_is_registered_once_and_the_copy_is_freed()
    {
        var cache = new PagedKvCache(8, Block);
        var a = new PagedSequence(8);
        var b = new PagedSequence(8);
        var prompt = Tokens(5);
        // Both admitted before either computed: no sharing possible yet.
        cache.AttachPrefix(a, prompt);
        cache.AttachPrefix(b, prompt);
        Assert.True(cache.EnsureCapacity(a, 5));
        Assert.True(cache.EnsureCapacity(b, 5));
        cache.Computed(a, prompt);
        cache.Computed(b, prompt);
        cache.Release(a);
        cache.Release(b);
        Assert.Equal(1, cache.CachedBlocks);
        Assert.Equal(8, cache.AvailableBlocks);
        var next = new PagedSequence(8);
        Assert.Equal(4, cache.AttachPrefix(next, prompt));
    }

    [Fact]
    public void Decoded_tokens_register_blocks_as_they_fill()
    {
        var cache = new PagedKvCache(8, Block);
        var tokens = Tokens(3).ToList();
        var sequence = Run(cache, [.. tokens]);
        Assert.Equal(0, sequence.RegisteredBlocks);
        for (var t = 0; t < 6; t++)
        {
            tokens.Add(900 + t);
            Assert.True(cache.EnsureCapacity(sequence, tokens.Count));
            cache.Computed(sequence, tokens.ToArray());
        }
        Assert.Equal(9, tokens.Count);
        Assert.Equal(2, sequence.RegisteredBlocks);
        cache.Release(sequence);
        // A prompt equal to the whole conversation so far reuses both full blocks.
        Assert.Equal(8, cache.AttachPrefix(new PagedSequence(8), [.. tokens, 1]));
    }

    [Fact]
    public void Every_block_comes_back_after_any_interleaving_of_sequences()
    {
        var random = new Random(7);
        var cache = new PagedKvCache(24, Block);
        var running = new List<(PagedSequence Sequence, List<int> Tokens)>();
        // Few distinct prompt starts, so prefixes are shared often.
        int[][] starts = [Tokens(9, 0), Tokens(9, 20), [.. Tokens(4, 0), .. Tokens(5, 40)]];
        for (var step = 0; step < 2000; step++)
        {
            var action = random.Next(3);
            if (action == 0 && running.Count < 6)
            {
                var prompt = starts[random.Next(starts.Length)].Take(1 + random.Next(9)).ToList();
                var sequence = new PagedSequence(16);
                var cached = cache.AttachPrefix(sequence, prompt.ToArray());
                Assert.True(cached % Block == 0 && cached < prompt.Count);
                if (cache.EnsureCapacity(sequence, prompt.Count))
                {
                    cache.Computed(sequence, prompt.ToArray());
                    running.Add((sequence, prompt));
                }
                else
                {
                    cache.Release(sequence);
                }
            }
            else if (action == 1 && running.Count > 0)
            {
                var (sequence, tokens) = running[random.Next(running.Count)];
                if (tokens.Count < 60 && cache.EnsureCapacity(sequence, tokens.Count + 1))
                {
                    tokens.Add(random.Next(5));
                    cache.Computed(sequence, tokens.ToArray());
                }
            }
            else if (running.Count > 0)
            {
                var index = random.Next(running.Count);
                cache.Release(running[index].Sequence);
                running.RemoveAt(index);
            }

            // Invariants: a block is held at most by as many sequences as hold it; held + available = all.
            var held = running.SelectMany(r => r.Sequence.Blocks.ToArray()).GroupBy(b => b).ToDictionary(g => g.Key, g => g.Count());
            Assert.Equal(held.Count, cache.UsedBlocks);
            Assert.All(held, pair => Assert.Equal(pair.Value, cache.ReferenceCount(pair.Key)));
            Assert.Equal(cache.TotalBlocks, cache.UsedBlocks + cache.AvailableBlocks);
            // A block shared by two sequences is full in both: nobody writes into it.
            foreach (var (sequence, tokens) in running)
            {
                for (var i = 0; i < sequence.BlockCount; i++)
                {
                    if (cache.ReferenceCount(sequence.Blocks[i]) > 1)
                        Assert.True(i < sequence.RegisteredBlocks, "a shared block is registered (full) in each sequence that holds it");
                }
            }
        }
        foreach (var (sequence, _) in running)
            cache.Release(sequence);
        Assert.Equal(0, cache.UsedBlocks);
        cache.DropCache();
        Assert.Equal(0, cache.CachedBlocks);
        Assert.Equal(cache.TotalBlocks, cache.AvailableBlocks);
    }
}
