using System.Text;

namespace InferenceServer.Tokenizer.Tests;

public sealed class StreamingDetokenizerTests
{
    private static readonly Lazy<Tokenizer> Qwen = new(() => Tokenizer.Load(TokenizerOracle.TokenizerJsonPath("qwen3")));
    private static readonly Lazy<Tokenizer> Mistral = new(() => Tokenizer.Load(TokenizerOracle.TokenizerJsonPath("llama2")));

    private static List<string> Pieces(StreamingDetokenizer stream, IEnumerable<int> ids)
    {
        var pieces = new List<string>();
        foreach (var id in ids)
            pieces.Add(stream.Add(id).ToString());
        pieces.Add(stream.Finish().ToString());
        return pieces;
    }

    [Fact]
    public void A_character_split_over_byte_tokens_is_released_whole()
    {
        // An emoji is four UTF-8 bytes; byte-level vocabularies often spell it with several tokens.
        var tokenizer = Qwen.Value;
        var character = tokenizer.Decode(RareCharacterIds(tokenizer));
        var ids = tokenizer.Encode(character + character + " ok");
        var pieces = Pieces(tokenizer.CreateStreamingDetokenizer(), ids);

        Assert.Equal(character + character + " ok", string.Concat(pieces));
        Assert.Contains("", pieces); // some token released nothing: it ended inside a character
        Assert.All(pieces, p => Assert.False(p.Contains('\uFFFD', StringComparison.Ordinal)));
        // Every released piece is whole text: no lone surrogate halves either.
        Assert.All(pieces, p => Assert.Equal(p, Encoding.UTF8.GetString(Encoding.UTF8.GetBytes(p))));
    }

    // A character the vocabulary has no token for, so it is spelled with several byte tokens.
    private static int[] RareCharacterIds(Tokenizer tokenizer)
    {
        foreach (var candidate in new[] { "𓀀", "𐤂", "𝔊", "🜁", "𒀀" })
        {
            var ids = tokenizer.Encode(candidate);
            if (ids.Length > 1)
                return ids;
        }
        throw new InvalidOperationException("no candidate character takes several tokens");
    }

    [Fact]
    public void Byte_fallback_tokens_join_into_characters()
    {
        var tokenizer = Mistral.Value;
        var ids = tokenizer.Encode("a 𓀀 b");
        Assert.Contains(ids, id => tokenizer.IdToToken(id)!.StartsWith("<0x", StringComparison.Ordinal));
        Assert.Equal("a 𓀀 b", string.Concat(Pieces(tokenizer.CreateStreamingDetokenizer(), ids)));
    }

    [Fact]
    public void An_unfinished_character_at_the_end_becomes_a_replacement_character()
    {
        var tokenizer = Qwen.Value;
        var ids = RareCharacterIds(tokenizer);
        var stream = tokenizer.CreateStreamingDetokenizer();
        Assert.Equal("", stream.Add(ids[0]).ToString());
        Assert.Equal("\uFFFD", stream.Finish().ToString());
    }

    [Fact]
    public void A_stop_string_spanning_tokens_ends_the_stream_and_is_not_released()
    {
        var tokenizer = Qwen.Value;
        var ids = tokenizer.Encode("def f():\n    return 1\n\n\ndef g():");
        var stream = tokenizer.CreateStreamingDetokenizer();
        stream.StopStrings = ["\n\n\n"];
        var text = new StringBuilder();
        var consumed = 0;
        foreach (var id in ids)
        {
            text.Append(stream.Add(id));
            consumed++;
            if (stream.Stopped)
                break;
        }
        Assert.True(stream.Stopped);
        Assert.Equal("\n\n\n", stream.MatchedStop);
        Assert.Equal("def f():\n    return 1", text.ToString());
        Assert.True(consumed < ids.Length);
        Assert.Equal("", stream.Add(ids[^1]).ToString());
        Assert.Equal("", stream.Finish().ToString());
    }

    [Fact]
    public void Text_that_could_still_become_a_stop_string_is_held_back_until_it_cannot()
    {
        var tokenizer = Qwen.Value;
        var stream = tokenizer.CreateStreamingDetokenizer();
        stream.StopStrings = ["<END>"];
        var released = new StringBuilder();
        foreach (var piece in new[] { "x = 1", " <", "EN", "ough" })
        {
            foreach (var id in tokenizer.Encode(piece))
                released.Append(stream.Add(id));
            if (piece == "EN")
                Assert.Equal("x = 1 ", released.ToString()); // " <EN" might still be "<END>"
        }
        released.Append(stream.Finish());
        Assert.False(stream.Stopped);
        Assert.Equal("x = 1 <ENough", released.ToString());
    }

    [Fact]
    public void The_earliest_of_several_stop_strings_wins()
    {
        var tokenizer = Qwen.Value;
        var stream = tokenizer.CreateStreamingDetokenizer();
        stream.StopStrings = ["world", "lo w"];
        var text = string.Concat(Pieces(stream, tokenizer.Encode("hello world")));
        Assert.Equal("hel", text);
        Assert.Equal("lo w", stream.MatchedStop);
    }

    [Fact]
    public void Special_tokens_are_text_unless_skipped()
    {
        var tokenizer = Qwen.Value;
        var ids = tokenizer.Encode("a<|endoftext|>b");
        Assert.Equal("a<|endoftext|>b", string.Concat(Pieces(tokenizer.CreateStreamingDetokenizer(), ids)));
        Assert.Equal("ab", string.Concat(Pieces(tokenizer.CreateStreamingDetokenizer(skipSpecialTokens: true), ids)));
    }

    [Fact]
    public void The_sentencepiece_leading_space_is_dropped_once()
    {
        var tokenizer = Mistral.Value;
        Assert.Equal("Hello world", string.Concat(Pieces(tokenizer.CreateStreamingDetokenizer(), tokenizer.Encode("Hello world"))));
        Assert.Equal(" two spaces", string.Concat(Pieces(tokenizer.CreateStreamingDetokenizer(), tokenizer.Encode(" two spaces"))));
    }

    [Fact]
    public void Ids_outside_the_vocabulary_add_no_text()
    {
        var tokenizer = Qwen.Value;
        var stream = tokenizer.CreateStreamingDetokenizer();
        Assert.Equal("", stream.Add(tokenizer.VocabSize + 10).ToString());
        Assert.Equal("", stream.Add(-1).ToString());
        Assert.Equal("hi", string.Concat(Pieces(stream, tokenizer.Encode("hi"))));
    }

    [Fact]
    public void Adding_tokens_allocates_nothing_once_warm()
    {
        var tokenizer = Qwen.Value;
        var ids = tokenizer.Encode(string.Concat(Enumerable.Repeat("for (int i = 0; i < n; i++) { sum += a[i]; } // ünïcødé 🦀\n", 20)));
        var warm = tokenizer.CreateStreamingDetokenizer();
        foreach (var id in ids)
            warm.Add(id); // builds the tokenizer's token-text table once

        var stream = tokenizer.CreateStreamingDetokenizer();
        stream.StopStrings = ["<STOP>"];
        for (var i = 0; i < 50; i++)
            stream.Add(ids[i]);
        var before = GC.GetAllocatedBytesForCurrentThread();
        var length = 0;
        for (var i = 50; i < ids.Length; i++)
            length += stream.Add(ids[i]).Length;
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.True(length > 0);
        Assert.Equal(0, allocated);
    }
}
