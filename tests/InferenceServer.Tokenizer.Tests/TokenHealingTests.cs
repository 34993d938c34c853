using System.Text;

namespace InferenceServer.Tokenizer.Tests;

public sealed class TokenHealingTests
{
    private static readonly Lazy<Tokenizer> Qwen = new(() => Tokenizer.Load(TokenizerOracle.TokenizerJsonPath("qwen3")));
    private static readonly Lazy<Tokenizer> Mistral = new(() => Tokenizer.Load(TokenizerOracle.TokenizerJsonPath("llama2")));

    private static TokenHealing Healing => Qwen.Value.Healing!;

    // Every text token, found the slow way, for comparison.
    private static IEnumerable<int> TextTokens(Tokenizer tokenizer)
    {
        var added = tokenizer.AddedTokens.Select(t => t.Id).ToHashSet();
        return Enumerable.Range(0, tokenizer.VocabSize).Where(id => !added.Contains(id) && tokenizer.Healing!.Bytes(id).Length > 0);
    }

    [Theory]
    [InlineData("        ")]
    [InlineData(" re")]
    [InlineData("self")]
    [InlineData("\u00e9")]
    public void Extending_lists_exactly_the_tokens_that_start_with_the_bytes(string text)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        var expected = TextTokens(Qwen.Value).Where(id => Healing.Bytes(id).StartsWith(bytes)).Order().ToArray();
        var actual = Healing.Extending(bytes).ToArray();

        Assert.NotEmpty(expected);
        Assert.Equal(expected, actual.Order().ToArray());
        // In byte order, so the set is one contiguous range of the sorted vocabulary.
        for (var i = 1; i < actual.Length; i++)
            Assert.True(Healing.Bytes(actual[i - 1]).SequenceCompareTo(Healing.Bytes(actual[i])) <= 0);
    }

    [Fact]
    public void Beginnings_are_the_tokens_that_spell_a_proper_start_of_the_bytes()
    {
        var bytes = Encoding.UTF8.GetBytes("        ");
        var expected = TextTokens(Qwen.Value)
            .Where(id => Healing.Bytes(id).Length < bytes.Length && bytes.AsSpan().StartsWith(Healing.Bytes(id)))
            .Order().ToArray();
        var found = new int[bytes.Length * 4];
        var count = Healing.BeginningsOf(bytes, found);

        Assert.True(expected.Length >= 2, "one space and shorter indentations are tokens");
        Assert.Equal(expected, found.Take(count).Order().ToArray());
    }

    [Fact]
    public void Beginnings_stop_at_the_room_given()
    {
        var bytes = Encoding.UTF8.GetBytes("        ");
        var found = new int[1];
        Assert.Equal(1, Healing.BeginningsOf(bytes, found));
        Assert.Equal(" ", Encoding.UTF8.GetString(Healing.Bytes(found[0])));
    }

    [Fact]
    public void The_last_text_token_of_a_prompt_is_healable_a_control_token_or_a_lone_token_is_not()
    {
        var tokenizer = Qwen.Value;
        var prompt = tokenizer.Encode("def f(x):\n    ");
        Assert.Equal(Healing.Bytes(prompt[^1]).ToArray(), Healing.HealableEnd(prompt));
        Assert.EndsWith("    ", Encoding.UTF8.GetString(Healing.HealableEnd(prompt)!), StringComparison.Ordinal);

        // Qwen's FIM markers are added tokens that are not special: still not healed.
        Assert.True(tokenizer.TryGetId("<|fim_middle|>", out var middle));
        Assert.False(tokenizer.IsSpecial(middle));
        Assert.Null(Healing.HealableEnd([.. prompt, middle]));
        Assert.True(tokenizer.TryGetId("<|endoftext|>", out var end));
        Assert.Null(Healing.HealableEnd([.. prompt, end]));
        Assert.Null(Healing.HealableEnd(prompt.AsSpan(0, 1)));
        Assert.Null(Healing.HealableEnd([]));
    }

    [Fact]
    public void Remaining_counts_what_a_token_left_to_spell()
    {
        var tokenizer = Qwen.Value;
        var remaining = Encoding.UTF8.GetBytes("        ");
        Assert.True(tokenizer.TryGetId("Ġ", out var space)); // the byte-level spelling of " "
        Assert.Equal(remaining.Length - 1, Healing.Remaining(remaining, space));

        var same = tokenizer.Encode("        ");
        Assert.Single(same);
        Assert.Equal(0, Healing.Remaining(remaining, same[0]));

        Assert.True(tokenizer.TryGetId("<|endoftext|>", out var end));
        Assert.Equal(0, Healing.Remaining(remaining, end));
    }

    [Fact]
    public void A_tokenizer_whose_tokens_depend_on_their_neighbours_has_no_healing()
    {
        // SentencePiece (Metaspace decoder): the first token's leading space is dropped.
        Assert.Null(Mistral.Value.Healing);
        Assert.NotNull(Qwen.Value.Healing);
    }

    [Fact]
    public void Known_leading_bytes_are_not_output_and_stops_are_looked_for_after_them()
    {
        var tokenizer = Qwen.Value;
        var ids = tokenizer.Encode("\n        return x\n");
        var known = Encoding.UTF8.GetByteCount("\n        ");

        var stream = tokenizer.CreateStreamingDetokenizer();
        stream.KnownLeadingBytes = known;
        stream.StopStrings = ["\n"];
        var text = new StringBuilder();
        foreach (var id in ids)
            text.Append(stream.Add(id));
        text.Append(stream.Finish());

        Assert.Equal("return x", text.ToString());
        Assert.Equal("\n", stream.MatchedStop);
        Assert.Throws<InvalidOperationException>(() => stream.KnownLeadingBytes = 1);
    }
}
