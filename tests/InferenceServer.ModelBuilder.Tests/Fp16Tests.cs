using InferenceServer.Model;
using InferenceServer.ModelBuilder.Onnx;
using InferenceServer.Tests;
using Xunit.Abstractions;

namespace InferenceServer.ModelBuilder.Tests;

/// <summary>
/// A float16 graph, meant for GPUs, also loads and runs on ONNX Runtime's CPU provider, so its
/// logits can be checked against the oracle here. float16 keeps about three decimal digits:
/// the fixtures' logits come out within about 0.01 of the float32 oracle.
/// </summary>
public sealed class Fp16Tests(ITestOutputHelper output)
{
    // float16 rounding of weights, activations and KV; measured at most 0.006 (llama) and 0.011
    // (qwen2, whose checkpoint is float16 already but whose activations now are too).
    private const float Tolerance = 0.05f;

    public static TheoryData<string> Fixtures => ["llama", "qwen2"];

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void Fp16_graph_runs_on_the_cpu_and_matches_the_oracle(string fixture)
    {
        using var temp = new TempFolder();
        var golden = Golden.Load(TestPaths.Oracle(fixture));
        var folder = temp.Combine("fp16");
        DecoderModelBuilder.BuildFromHuggingFace(TestPaths.Oracle(fixture), folder, new BuildOptions { Precision = Precision.Fp16 });

        // It is a float16 graph: float16 KV cache, float32 logits.
        var graph = OnnxTestModel.Load(folder).Graph;
        Assert.Equal(TensorProto.Types.DataType.Float16, OnnxTestModel.ElementType(graph.Input.Single(i => i.Name == "past_key_values.0.key")));
        Assert.Equal(TensorProto.Types.DataType.Float, OnnxTestModel.ElementType(graph.Output.Single(o => o.Name == "logits")));

        using var runner = new DecoderRunner(ModelFolder.Load(folder), new RunnerOptions { MaxBatch = 2, MaxSequenceLength = 64 });
        Assert.Equal(2L * 2 * 2 * 2 * 64 * 32 * 2, runner.KvCacheBytes); // layers, key+value, slots, kv heads, capacity, head_dim, 2 bytes

        // Prefill of the whole sequence.
        var prefill = runner.Step(0, [new SequenceStep(0, golden.Tokens.Length)], golden.Tokens);
        var prefillDifference = Compare.MaxAbsDifference(prefill, golden.Row(golden.Tokens.Length - 1));

        // Token by token in the other slot: every position, through the float16 KV cache.
        var decodeDifference = 0f;
        for (var t = 0; t < golden.Tokens.Length; t++)
        {
            var logits = runner.Step(1, [new SequenceStep(t, 1)], golden.Tokens.AsSpan(t, 1));
            decodeDifference = Math.Max(decodeDifference, Compare.MaxAbsDifference(logits, golden.Row(t)));
            Assert.Equal(Greedy.ArgMax(golden.Row(t)), Greedy.ArgMax(logits));
        }

        output.WriteLine($"{fixture} fp16 on CPU: prefill max |diff| {prefillDifference}, decode max |diff| {decodeDifference}");
        Assert.InRange(prefillDifference, 0, Tolerance);
        Assert.InRange(decodeDifference, 0, Tolerance);
        // Not accidentally computed in float32: rounding to float16 must show.
        Assert.True(Math.Max(prefillDifference, decodeDifference) > 1e-5f, "fp16 logits equal the float32 oracle exactly");
    }
}
