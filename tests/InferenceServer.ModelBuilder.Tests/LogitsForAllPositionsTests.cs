using InferenceServer.Model;
using InferenceServer.Tests;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace InferenceServer.ModelBuilder.Tests;

/// <summary>
/// <see cref="BuildOptions.LogitsForAllPositions"/>: the graph returns [batch, sequence, vocab]
/// (for prompt scoring). The runner recognizes the symbolic sequence dimension and picks each
/// row's last real position itself, so it must give what the default graph gives, which gathers
/// that position inside the graph. Both fixtures: llama's lm_head is a MatMul, qwen2's a Gemm
/// with the tied embedding and its own reshape back to [batch, sequence, vocab].
/// </summary>
public sealed class LogitsForAllPositionsTests : IDisposable
{
    private const float Tolerance = 1e-4f;
    private readonly TempFolder _temp = new();

    public void Dispose() => _temp.Dispose();

    public static TheoryData<string> Fixtures => ["llama", "qwen2"];

    private (string Last, string All) BuildBoth(string fixture)
    {
        var last = _temp.Combine("last");
        var all = _temp.Combine("all");
        DecoderModelBuilder.BuildFromHuggingFace(TestPaths.Oracle(fixture), last, new BuildOptions());
        DecoderModelBuilder.BuildFromHuggingFace(TestPaths.Oracle(fixture), all, new BuildOptions { LogitsForAllPositions = true });
        return (last, all);
    }

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void Logits_have_a_symbolic_sequence_dimension(string fixture)
    {
        var (last, all) = BuildBoth(fixture);
        Assert.Equal(["batch_size", "sequence_length", "320"], OnnxTestModel.Dims(OnnxTestModel.Load(all).Graph.Output[0]));
        Assert.Equal(["batch_size", "1", "320"], OnnxTestModel.Dims(OnnxTestModel.Load(last).Graph.Output[0]));
        Assert.DoesNotContain(OnnxTestModel.Load(all).Graph.Input, i => i.Name == "logits_to_keep");
        // Nothing is gathered before the vocabulary projection.
        Assert.Empty(OnnxTestModel.Load(all).Nodes("GatherND"));
        Assert.Single(OnnxTestModel.Load(last).Nodes("GatherND"));
    }

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void Runner_gives_the_same_logits_as_with_the_default_graph(string fixture)
    {
        var golden = Golden.Load(TestPaths.Oracle(fixture));
        var (lastFolder, allFolder) = BuildBoth(fixture);
        var options = new RunnerOptions { MaxBatch = 2, MaxSequenceLength = 64 };
        using var last = new DecoderRunner(ModelFolder.Load(lastFolder), options);
        using var all = new DecoderRunner(ModelFolder.Load(allFolder), options);
        var vocab = last.VocabSize;

        // Two fresh prompts of different lengths, right-padded into one step: the short row's
        // last position is not the last column.
        SequenceStep[] rows = [new(0, golden.TokensShort.Length), new(0, golden.Tokens.Length)];
        int[] tokens = [.. golden.TokensShort, .. golden.Tokens];
        var expected = last.Step(0, rows, tokens).ToArray();
        var actual = all.Step(0, rows, tokens).ToArray();
        Assert.InRange(Compare.MaxAbsDifference(actual, expected), 0, Tolerance);
        // And both are the oracle's.
        Assert.InRange(Compare.MaxAbsDifference(actual.AsSpan(0, vocab), golden.ShortRow(golden.TokensShort.Length - 1)), 0, 1e-3f);
        Assert.InRange(Compare.MaxAbsDifference(actual.AsSpan(vocab, vocab), golden.Row(golden.Tokens.Length - 1)), 0, 1e-3f);

        // Decode steps: one token per row, rows at different lengths.
        int[] lengths = [golden.TokensShort.Length, golden.Tokens.Length];
        for (var step = 0; step < 4; step++)
        {
            int[] next = [Greedy.ArgMax(expected.AsSpan(0, vocab)), Greedy.ArgMax(expected.AsSpan(vocab, vocab))];
            rows = [new(lengths[0], 1), new(lengths[1], 1)];
            expected = last.Step(0, rows, next).ToArray();
            actual = all.Step(0, rows, next).ToArray();
            Assert.InRange(Compare.MaxAbsDifference(actual, expected), 0, Tolerance);
            lengths[0]++;
            lengths[1]++;
        }

        // A continuation: one row with a past and several new tokens.
        int[] more = [5, 6, 7];
        expected = last.Step(0, [new SequenceStep(lengths[0], more.Length)], more).ToArray();
        actual = all.Step(0, [new SequenceStep(lengths[0], more.Length)], more).ToArray();
        Assert.InRange(Compare.MaxAbsDifference(actual, expected), 0, Tolerance);
    }

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void Graph_scores_every_position_of_two_right_padded_prompts_in_one_run(string fixture)
    {
        // What the option is for: one run gives the logits of every prefix (the oracle's rows),
        // here for a short and a long prompt together, the short one padded on the right.
        var golden = Golden.Load(TestPaths.Oracle(fixture));
        var (_, allFolder) = BuildBoth(fixture);
        var config = ModelFolder.Load(allFolder).Config.Model;
        var vocab = config.VocabSize;
        int shortLength = golden.TokensShort.Length, length = golden.Tokens.Length;

        var ids = new long[2 * length];
        var mask = new long[2 * length];
        for (var t = 0; t < length; t++)
        {
            ids[t] = t < shortLength ? golden.TokensShort[t] : 0;
            mask[t] = t < shortLength ? 1 : 0;
            ids[length + t] = golden.Tokens[t];
            mask[length + t] = 1;
        }

        using var session = new InferenceSession(Path.Combine(allFolder, DecoderModelBuilder.GraphFileName));
        var inputs = new Dictionary<string, OrtValue>();
        try
        {
            inputs["input_ids"] = OrtValue.CreateTensorValueFromMemory(ids, [2, length]);
            inputs["attention_mask"] = OrtValue.CreateTensorValueFromMemory(mask, [2, length]);
            long[] emptyPast = [2, config.Decoder.NumKeyValueHeads, 0, config.Decoder.HeadSize];
            for (var i = 0; i < config.Decoder.NumHiddenLayers; i++)
            {
                inputs[$"past_key_values.{i}.key"] = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, TensorElementType.Float, emptyPast);
                inputs[$"past_key_values.{i}.value"] = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, TensorElementType.Float, emptyPast);
            }
            using var runOptions = new RunOptions();
            using var outputs = session.Run(runOptions, inputs, ["logits"]);
            Assert.Equal([2L, length, vocab], outputs[0].GetTensorTypeAndShape().Shape);
            var logits = outputs[0].GetTensorDataAsSpan<float>();
            for (var t = 0; t < length; t++)
            {
                var difference = Compare.MaxAbsDifference(logits.Slice((length + t) * vocab, vocab), golden.Row(t));
                Assert.True(difference <= 1e-3f, $"long row, position {t}: max abs difference {difference}");
                if (t < shortLength)
                {
                    difference = Compare.MaxAbsDifference(logits.Slice(t * vocab, vocab), golden.ShortRow(t));
                    Assert.True(difference <= 1e-3f, $"short row, position {t}: max abs difference {difference}");
                }
            }
        }
        finally
        {
            foreach (var value in inputs.Values)
                value.Dispose();
        }
    }
}
