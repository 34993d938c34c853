using System.Runtime.InteropServices;
using System.Text.Json;

namespace InferenceServer.Tests;

/// <summary>The oracle's golden logits (tests/fixtures/oracle/make_golden.py): every position of fixed token sequences.</summary>
internal sealed record Golden(int[] Tokens, float[] Logits, int[] TokensShort, float[] LogitsShort, int VocabSize)
{
    public static Golden Load(string folder)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(System.IO.Path.Combine(folder, "golden.json")));
        var root = doc.RootElement;
        int[] Ids(string name) => root.GetProperty(name).EnumerateArray().Select(e => e.GetInt32()).ToArray();
        float[] Floats(string name) => MemoryMarshal.Cast<byte, float>(File.ReadAllBytes(System.IO.Path.Combine(folder, root.GetProperty(name).GetString()!))).ToArray();
        return new Golden(Ids("tokens"), Floats("logits_file"), Ids("tokens_short"), Floats("logits_short_file"), root.GetProperty("vocab_size").GetInt32());
    }

    public ReadOnlySpan<float> Row(int position) => Logits.AsSpan(position * VocabSize, VocabSize);

    public ReadOnlySpan<float> ShortRow(int position) => LogitsShort.AsSpan(position * VocabSize, VocabSize);
}

internal static class Compare
{
    public static float MaxAbsDifference(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        Assert.Equal(a.Length, b.Length);
        var max = 0f;
        for (var i = 0; i < a.Length; i++)
            max = Math.Max(max, Math.Abs(a[i] - b[i]));
        return max;
    }
}
