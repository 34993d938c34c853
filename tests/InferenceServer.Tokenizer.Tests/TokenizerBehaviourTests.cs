using System.Text;

namespace InferenceServer.Tokenizer.Tests;

public sealed class TokenizerBehaviourTests
{
    private static readonly Lazy<Tokenizer> Qwen = new(() => Tokenizer.Load(TokenizerOracle.TokenizerJsonPath("qwen3")));

    [Fact]
    public void Lone_surrogates_are_read_as_replacement_characters()
    {
        // Documented replacement: U+FFFD, as the reference's bindings do before tokenizing.
        var tokenizer = Qwen.Value;
        Assert.Equal(tokenizer.Encode("a\uFFFDb"), tokenizer.Encode("a\uD800b"));
        Assert.Equal(tokenizer.Encode("\uFFFDx\uFFFD"), tokenizer.Encode("\uDC00x\uD83D"));
        Assert.Equal(tokenizer.Encode("🦀"), tokenizer.Encode("\uD83E\uDD80"));
    }

    [Fact]
    public void Ids_outside_the_vocabulary_decode_to_nothing()
    {
        var tokenizer = Qwen.Value;
        var hello = tokenizer.Encode("hello");
        Assert.Equal("hello", tokenizer.Decode([-5, .. hello, tokenizer.VocabSize, int.MaxValue]));
        Assert.Null(tokenizer.IdToToken(tokenizer.VocabSize));
    }

    [Fact]
    public void Special_token_text_can_be_kept_as_text()
    {
        var tokenizer = Qwen.Value;
        Assert.True(tokenizer.TryGetId("<|endoftext|>", out var eot));
        Assert.Contains(eot, tokenizer.Encode("x<|endoftext|>"));
        var asText = tokenizer.Encode("x<|endoftext|>", parseSpecialTokens: false);
        Assert.DoesNotContain(eot, asText);
        Assert.Equal("x<|endoftext|>", tokenizer.Decode(asText));
    }

    [Fact]
    public void Encoding_from_several_threads_gives_the_same_ids()
    {
        var tokenizer = Qwen.Value;
        var texts = TokenizerOracle.Corpus.Take(400).ToArray();
        var expected = texts.Select(t => tokenizer.Encode(t)).ToArray();
        Parallel.For(0, 4, _ =>
        {
            for (var i = 0; i < texts.Length; i++)
                Assert.Equal(expected[i], tokenizer.Encode(texts[i]));
        });
    }

    [Theory]
    [InlineData("{ not json", "not valid JSON")]
    [InlineData("[1, 2]", "not a JSON object")]
    [InlineData("{\"added_tokens\": []}", "no \"model\" section")]
    [InlineData("{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}", "model type 'WordPiece' is not supported")]
    [InlineData("{\"model\": {\"type\": \"BPE\"}}", "no vocab")]
    [InlineData("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a b c\"]}}", "merge 0")]
    [InlineData("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a a\"]}}", "'aa', which is not in the vocabulary")]
    [InlineData("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"pre_tokenizer\": {\"type\": \"Whitespace\"}}", "pre_tokenizer type 'Whitespace' is not supported")]
    [InlineData("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"normalizer\": {\"type\": \"Bert\"}}", "normalizer type 'Bert' is not supported")]
    [InlineData("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"decoder\": {\"type\": \"WordPiece\"}}", "decoder type 'WordPiece' is not supported")]
    [InlineData("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"decoder\": {\"decoders\": []}}", "without a \"type\"")]
    [InlineData("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"unk_token\": \"<unk>\"}}", "unknown token '<unk>'")]
    [InlineData("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": \"zero\"}}}", "malformed tokenizer.json")]
    [InlineData("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"end_of_word_suffix\": \"</w>\"}}", "end_of_word_suffix")]
    public void A_malformed_tokenizer_json_is_refused_with_a_message_that_names_the_problem(string json, string expected)
    {
        using var stream = new MemoryStream(Encoding.UTF8.GetBytes(json));
        var e = Assert.Throws<TokenizerLoadException>(() => Tokenizer.Load(stream, "tokenizer.json"));
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_missing_file_is_named()
    {
        var e = Assert.Throws<TokenizerLoadException>(() => Tokenizer.Load("/nonexistent/tokenizer.json"));
        Assert.Contains("/nonexistent/tokenizer.json", e.Message, StringComparison.Ordinal);
    }
}
