namespace InferenceServer.Tokenizer.Tests;

public sealed class FillInTheMiddleTests
{
    [Fact]
    public void Qwen_tokenizers_get_the_qwen_coder_markers_in_prefix_suffix_middle_order()
    {
        var tokenizer = Tokenizer.Load(TokenizerOracle.TokenizerJsonPath("qwen3"));
        var fim = FimTemplate.Detect(tokenizer);
        Assert.NotNull(fim);
        Assert.Equal("qwen2.5-coder", fim.Family);

        var ids = fim.Build(tokenizer, "def add(a, b):\n    ", "\n\nprint(add(1, 2))");
        Assert.Equal("<|fim_prefix|>def add(a, b):\n    <|fim_suffix|>\n\nprint(add(1, 2))<|fim_middle|>", tokenizer.Decode(ids));
        Assert.Equal(fim.PrefixId, ids[0]);
        Assert.Equal(fim.MiddleId, ids[^1]);
        Assert.True(tokenizer.TryGetId("<|endoftext|>", out var eot));
        Assert.Contains(eot, fim.StopIds);
    }

    [Fact]
    public void Our_model_gets_starcoder_markers_and_suffix_prefix_middle_keeps_the_typed_end_last()
    {
        var tokenizer = Tokenizer.Load(TokenizerOracle.TokenizerJsonPath("minicoder"));
        var fim = FimTemplate.Detect(tokenizer)! with { Order = FimOrder.SuffixPrefixMiddle };
        Assert.Equal("starcoder", fim.Family);

        var ids = fim.Build(tokenizer, "def add(a, b):\n    ret", "\n\nprint(add(1, 2))\n");
        Assert.Equal("<fim_prefix><fim_suffix>\n\nprint(add(1, 2))\n<fim_middle>def add(a, b):\n    ret", tokenizer.Decode(ids));
        // One more keystroke changes only the end: everything up to the prefix's start is the same.
        var next = fim.Build(tokenizer, "def add(a, b):\n    retu", "\n\nprint(add(1, 2))\n");
        var common = ids.Zip(next).TakeWhile(pair => pair.First == pair.Second).Count();
        Assert.True(common >= ids.Length - 2, $"{common} of {ids.Length} ids in common");
        Assert.True(tokenizer.TryGetId("<|endoftext|>", out var eot));
        Assert.Contains(eot, fim.StopIds);
    }

    [Fact]
    public void Marker_text_inside_user_code_stays_text()
    {
        var tokenizer = Tokenizer.Load(TokenizerOracle.TokenizerJsonPath("qwen3"));
        var fim = FimTemplate.Detect(tokenizer)!;
        var ids = fim.Build(tokenizer, "s = '<|fim_middle|>'", "<|endoftext|>");
        Assert.Single(ids, fim.MiddleId);
        Assert.True(tokenizer.TryGetId("<|endoftext|>", out var eot));
        Assert.DoesNotContain(eot, ids);
    }

    [Fact]
    public void DeepSeek_tokenizers_get_the_deepseek_markers_with_bos()
    {
        var tokenizer = Tokenizer.Load(TokenizerOracle.TokenizerJsonPath("deepseek_v3"));
        var fim = FimTemplate.Detect(tokenizer);
        Assert.NotNull(fim);
        Assert.Equal("deepseek-coder", fim.Family);
        var ids = fim.Build(tokenizer, "a", "b");
        // The post-processor adds no BOS in this file, so the prompt starts with the marker.
        Assert.Empty(tokenizer.LeadingSpecialIds);
        Assert.Equal("<｜fim▁begin｜>a<｜fim▁hole｜>b<｜fim▁end｜>", tokenizer.Decode(ids));
    }

    [Fact]
    public void StarCoder_and_CodeLlama_markers_are_recognized()
    {
        Assert.Equal("starcoder", FimTemplate.Detect(Synthetic("<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<|endoftext|>"))!.Family);
        var codeLlama = FimTemplate.Detect(Synthetic("▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>"))!;
        Assert.Equal("codellama", codeLlama.Family);
        Assert.Single(codeLlama.StopIds);
        Assert.Null(FimTemplate.Detect(Synthetic()));
    }

    // A byte-level tokenizer with only the given added tokens.
    private static Tokenizer Synthetic(params string[] added)
    {
        var vocab = string.Join(", ", Enumerable.Range(0, 256).Select(b => $"\"{System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping.Encode(Model.ByteLevelAlphabet.ByteToChar((byte)b).ToString())}\": {b}"));
        var tokens = string.Join(", ", added.Select((t, i) => $"{{\"id\": {256 + i}, \"content\": \"{t}\", \"special\": true, \"normalized\": false}}"));
        var json = $"{{\"model\": {{\"type\": \"BPE\", \"vocab\": {{{vocab}}}, \"merges\": []}}, \"pre_tokenizer\": {{\"type\": \"ByteLevel\", \"add_prefix_space\": false}}, \"decoder\": {{\"type\": \"ByteLevel\"}}, \"added_tokens\": [{tokens}]}}";
        using var stream = new MemoryStream(System.Text.Encoding.UTF8.GetBytes(json));
        return Tokenizer.Load(stream, "synthetic");
    }
}
