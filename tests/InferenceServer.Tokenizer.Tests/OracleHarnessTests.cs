using System.Text.Json;

namespace InferenceServer.Tokenizer.Tests;

/// <summary>
/// Checks the oracle harness itself (tests/fixtures/tokenizer): the corpus, the golden files and the
/// tokenizer files it points at. Says nothing about our tokenizer.
/// </summary>
public class OracleHarnessTests
{
    public static TheoryData<string> Names => new(TokenizerOracle.Names);

    [Fact]
    public void Corpus_HasAtLeastTenThousandStrings_WithoutLoneSurrogates()
    {
        var corpus = TokenizerOracle.Corpus;

        Assert.True(corpus.Count >= 10_000, $"corpus has {corpus.Count} strings");
        Assert.Contains(string.Empty, corpus);
        // Lone surrogates are tested separately: the binding turns each into U+FFFD before Rust sees it.
        for (var i = 0; i < corpus.Count; i++)
            Assert.True(!HasLoneSurrogate(corpus[i]), $"corpus line {i} has a lone surrogate");
    }

    [Theory]
    [MemberData(nameof(Names))]
    public void Golden_HasOneEntryPerCorpusLine_WithIdsInsideTheVocabulary(string name)
    {
        var corpus = TokenizerOracle.Corpus;
        var golden = TokenizerOracle.Golden(name);
        var vocabSize = VocabSize(TokenizerOracle.TokenizerJsonPath(name));

        Assert.Equal(corpus.Count, golden.Count);
        for (var i = 0; i < golden.Count; i++)
        {
            var entry = golden[i];
            Assert.Equal(i, entry.Index);
            Assert.True(entry.Ids.All(id => id >= 0 && id < vocabSize), $"line {i}: an id outside 0..{vocabSize - 1}");
            Assert.True(entry.IdsWithSpecial.All(id => id >= 0 && id < vocabSize), $"line {i}: an id outside 0..{vocabSize - 1}");
            if (corpus[i].Length > 0)
                Assert.NotEmpty(entry.Ids);
        }
        Assert.Empty(golden[IndexOf(corpus, string.Empty)].Ids);
    }

    [Fact]
    public void TokenizerFolders_HoldTokenizerJsonAndConfig()
    {
        foreach (var name in TokenizerOracle.Names)
        {
            Assert.True(File.Exists(TokenizerOracle.TokenizerJsonPath(name)), name);
            Assert.True(File.Exists(Path.Combine(TokenizerOracle.TokenizerFolder(name), "tokenizer_config.json")), name);
        }
    }

    // Ids run from 0 to the largest id of the model's vocabulary or of the added tokens.
    private static int VocabSize(string tokenizerJson)
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(tokenizerJson));
        var root = doc.RootElement;
        var max = -1;
        foreach (var entry in root.GetProperty("model").GetProperty("vocab").EnumerateObject())
            max = Math.Max(max, entry.Value.GetInt32());
        foreach (var added in root.GetProperty("added_tokens").EnumerateArray())
            max = Math.Max(max, added.GetProperty("id").GetInt32());
        return max + 1;
    }

    private static int IndexOf(IReadOnlyList<string> corpus, string text)
    {
        for (var i = 0; i < corpus.Count; i++)
        {
            if (string.Equals(corpus[i], text, StringComparison.Ordinal))
                return i;
        }
        throw new InvalidOperationException("not in the corpus: " + JsonSerializer.Serialize(text));
    }

    private static bool HasLoneSurrogate(string text)
    {
        for (var i = 0; i < text.Length; i++)
        {
            if (char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
                i++;
            else if (char.IsSurrogate(text[i]))
                return true;
        }
        return false;
    }
}
