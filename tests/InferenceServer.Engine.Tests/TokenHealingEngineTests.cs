using System.Text;

namespace InferenceServer.Engine.Tests;

/// <summary>The engine's side of token healing, on the real small model and its byte-level tokenizer.</summary>
public sealed class TokenHealingEngineTests(EngineFixture model) : IClassFixture<EngineFixture>
{
    private Tokenizer.TokenHealing Healing => model.Tokenizer.Healing!;

    private GenerationRequest Healed(string prompt, int maxTokens) => new()
    {
        PromptTokens = model.Tokenizer.Encode(prompt),
        MaxTokens = maxTokens,
        IgnoreEos = true,
        HealPromptEnd = true,
    };

    // How many of the generated tokens it took to spell the healed bytes again.
    private int SpellingTokens(IReadOnlyList<int> generated, int healedBytes)
    {
        var bytes = 0;
        for (var i = 0; i < generated.Count; i++)
        {
            bytes += Healing.Bytes(generated[i]).Length;
            if (bytes >= healedBytes)
                return i + 1;
        }
        return generated.Count;
    }

    [Theory]
    [InlineData("def f(x):\n    ")]
    [InlineData("for item in ite")]
    [InlineData("x = 1\n")]
    public async Task The_prompt_end_is_spelled_again_and_not_output(string prompt)
    {
        var request = Healed(prompt, maxTokens: 6);
        var healed = Healing.HealableEnd(request.PromptTokens.ToArray())!;
        Assert.NotNull(healed);

        await using var test = new EngineUnderTest(model);
        var result = await test.RunAsync(request);

        // The last prompt token was taken back, not computed.
        Assert.Equal(request.PromptTokens.Count - 1, result.Usage.PromptTokens);
        // A random model would wander off at once: the healed bytes come back only under the constraint.
        var generatedBytes = result.TokenIds.SelectMany(id => Healing.Bytes(id).ToArray()).ToArray();
        Assert.True(generatedBytes.AsSpan().StartsWith(healed), $"the generation does not start with the prompt's end: {Encoding.UTF8.GetString(generatedBytes)}");
        // Those bytes are not output again, and their tokens do not count toward max_tokens.
        Assert.Equal(Encoding.UTF8.GetString(generatedBytes.AsSpan(healed.Length)), result.Text);
        Assert.Equal(6 + SpellingTokens(result.TokenIds, healed.Length), result.TokenIds.Count);
        Assert.Equal(FinishReason.Length, result.FinishReason);
        test.AssertIdle();
    }

    [Fact]
    public async Task Without_healing_the_whole_prompt_is_computed_and_every_token_output()
    {
        var request = Healed("def f(x):\n    ", maxTokens: 6) with { HealPromptEnd = false };
        await using var test = new EngineUnderTest(model);
        var result = await test.RunAsync(request);

        Assert.Equal(request.PromptTokens.Count, result.Usage.PromptTokens);
        Assert.Equal(6, result.TokenIds.Count);
        Assert.Equal(model.Tokenizer.Decode(result.TokenIds.ToArray()), result.Text);
        test.AssertIdle();
    }

    [Fact]
    public async Task A_healed_newline_does_not_match_a_newline_stop()
    {
        var request = Healed("x = 1\n", maxTokens: 40) with { StopStrings = ["\n"] };
        var healed = Healing.HealableEnd(request.PromptTokens.ToArray())!;
        Assert.Contains((byte)'\n', healed);

        await using var test = new EngineUnderTest(model);
        var result = await test.RunAsync(request);

        Assert.True(result.TokenIds.Count > SpellingTokens(result.TokenIds, healed.Length),
            "the stop fired on the newline the prompt already had");
        Assert.DoesNotContain('\n', result.Text);
        test.AssertIdle();
    }

    [Fact]
    public async Task A_prompt_ending_in_a_special_token_is_served_as_it_is()
    {
        var tokenizer = model.Tokenizer;
        var special = tokenizer.AddedTokens.First(t => t.Special).Id;
        var request = Healed("def f(x):", maxTokens: 4) with { PromptTokens = [.. tokenizer.Encode("def f(x):"), special] };

        await using var test = new EngineUnderTest(model);
        var healed = await test.RunAsync(request);
        var plain = await test.RunAsync(request with { HealPromptEnd = false });

        Assert.Equal(request.PromptTokens.Count, healed.Usage.PromptTokens);
        Assert.Equal(plain.TokenIds, healed.TokenIds);
        test.AssertIdle();
    }
}
