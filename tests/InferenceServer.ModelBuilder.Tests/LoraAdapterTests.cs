using InferenceServer.Model;
using InferenceServer.Model.Lora;
using InferenceServer.Tests;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace InferenceServer.ModelBuilder.Tests;

/// <summary>
/// LoRA adapters end to end at the model level: a PEFT adapter with random low-rank weights,
/// converted for a base built with adapter inputs, against the adapter merged into the weights and
/// built as a plain model; several adapters in one batch; the base without adapters.
/// </summary>
public sealed class LoraAdapterTests(LoraFixture models) : IClassFixture<LoraFixture>
{
    // float32 throughout; the adapter run computes x W + x A B where the merged model computes
    // x (W + B A), so they differ by rounding only.
    private const float MergedTolerance = 1e-4f;

    private static readonly int[] Prompt = [1, 17, 43, 99, 5, 230, 64, 12];

    private static int[] Tokens(int count, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => random.Next(3, LoraTestModels.Config.VocabSize)).ToArray();
    }

    /// <summary>Greedy decoding on slot 0 with one adapter id for the row; the logits of every step.</summary>
    private static (int[] Tokens, float[][] Logits) Generate(DecoderRunner runner, int[] prompt, int count, int adapter = 0)
    {
        int[] adapters = [adapter];
        var tokens = new List<int>();
        var logits = new List<float[]>();
        var step = runner.Step(0, [new SequenceStep(0, prompt.Length)], prompt, adapters).ToArray();
        for (var length = prompt.Length; ; length++)
        {
            logits.Add(step);
            tokens.Add(Greedy.ArgMax(step));
            if (tokens.Count == count)
                break;
            step = runner.Step(0, [new SequenceStep(length, 1)], [tokens[^1]], adapters).ToArray();
        }
        return ([.. tokens], [.. logits]);
    }

    public static TheoryData<string> AdapterNames => new(LoraFixture.Everywhere.Name, LoraFixture.QueryValue.Name);

    [Fact]
    public void A_step_that_keeps_several_positions_runs_its_row_with_its_adapter()
    {
        // What checking drafted tokens does: one step over four tokens, the logits of each position.
        using var runner = LoraFixture.Runner(models.WithAdapters);
        Assert.True(runner.HasMultiPositionLogits);
        var id = runner.LoadAdapter(LoraFixture.Everywhere.Name);
        var (tokens, logits) = Generate(runner, Prompt, 5, id);
        var vocab = runner.VocabSize;

        float[] Kept(int adapter)
        {
            runner.Step(0, [new SequenceStep(0, Prompt.Length)], Prompt, [adapter]);
            return runner.StepKeepingLogits(0, new SequenceStep(Prompt.Length, 4), tokens.AsSpan(0, 4), 4, adapter).ToArray();
        }
        var kept = Kept(id);
        for (var i = 0; i < 4; i++)
            Assert.InRange(Compare.MaxAbsDifference(kept.AsSpan(i * vocab, vocab).ToArray(), logits[i + 1]), 0, MergedTolerance);
        // Without the adapter the same step says something else.
        var baseKept = Kept(0);
        Assert.True(Compare.MaxAbsDifference(baseKept.AsSpan(0, vocab).ToArray(), logits[1]) > 0.01f);
    }

    [Theory]
    [MemberData(nameof(AdapterNames))]
    public void An_adapter_gives_the_greedy_tokens_and_logits_of_its_merged_model(string adapter)
    {
        using var runner = LoraFixture.Runner(models.WithAdapters);
        var id = runner.LoadAdapter(adapter);
        using var merged = LoraFixture.Runner(models.MergedModels[adapter]);
        using var plain = LoraFixture.Runner(models.Plain);

        var withAdapter = Generate(runner, Prompt, 16, id);
        var expected = Generate(merged, Prompt, 16);
        var baseOnly = Generate(plain, Prompt, 16);

        Assert.Equal(expected.Tokens, withAdapter.Tokens);
        for (var step = 0; step < expected.Logits.Length; step++)
            Assert.InRange(Compare.MaxAbsDifference(withAdapter.Logits[step], expected.Logits[step]), 0, MergedTolerance);
        // The adapter matters: without it the model says something else.
        Assert.NotEqual(baseOnly.Tokens, withAdapter.Tokens);
    }

    [Theory]
    [InlineData("everywhere", "query-value", "")] // one index entry per row
    [InlineData("query-value", "query-value", "query-value")] // one entry broadcast over the rows
    public void Rows_in_one_batch_each_get_what_their_adapter_gives_them_alone(string first, string second, string third)
    {
        using var runner = LoraFixture.Runner(models.WithAdapters, slots: 3);
        runner.LoadAdapter(LoraFixture.Everywhere.Name);
        runner.LoadAdapter(LoraFixture.QueryValue.Name);
        var ids = new[] { first, second, third }.Select(name => name.Length == 0 ? 0 : runner.AdapterId(name)).ToArray();
        using var alone = LoraFixture.Runner(models.WithAdapters);
        alone.LoadAdapter(LoraFixture.Everywhere.Name);
        alone.LoadAdapter(LoraFixture.QueryValue.Name);
        float[] Alone(int[] tokens, int adapter) => alone.Step(0, [new SequenceStep(0, tokens.Length)], tokens, [adapter]).ToArray();

        // A prefill of three fresh prompts of different lengths, each row with its own adapter.
        int[][] prompts = [Tokens(6, 1), Tokens(11, 2), Tokens(3, 3)];
        var vocab = runner.VocabSize;
        var logits = runner.Step(0, prompts.Select(p => new SequenceStep(0, p.Length)).ToArray(), prompts.SelectMany(p => p).ToArray(), ids).ToArray();
        var histories = prompts.Select(p => p.ToList()).ToArray();
        var next = new int[3];
        for (var step = 0; ; step++)
        {
            for (var r = 0; r < 3; r++)
            {
                var row = logits.AsSpan(r * vocab, vocab);
                Assert.InRange(Compare.MaxAbsDifference(row, Alone([.. histories[r]], ids[r])), 0, MergedTolerance);
                next[r] = Greedy.ArgMax(row);
                histories[r].Add(next[r]);
            }
            if (step == 4)
                break;
            // Then decode steps of all three together.
            var rows = histories.Select(h => new SequenceStep(h.Count - 1, 1)).ToArray();
            logits = runner.Step(0, rows, next, ids).ToArray();
        }
    }

    [Fact]
    public void Without_an_adapter_the_graph_with_adapter_inputs_computes_the_base_model_exactly()
    {
        int[][] prompts = [Tokens(6, 4), Tokens(9, 5)];
        var rows = prompts.Select(p => new SequenceStep(0, p.Length)).ToArray();
        var tokens = prompts.SelectMany(p => p).ToArray();
        using var plain = LoraFixture.Runner(models.Plain, slots: 2);
        var expected = plain.Step(0, rows, tokens).ToArray();

        using var unloaded = LoraFixture.Runner(models.WithAdapters, slots: 2);
        Assert.Equal(expected, unloaded.Step(0, rows, tokens).ToArray());

        // Adapters loaded, and one row running with one: the other row still gets the base model.
        using var loaded = LoraFixture.Runner(models.WithAdapters, slots: 2);
        var id = loaded.LoadAdapter(LoraFixture.Everywhere.Name);
        Assert.Equal(expected, loaded.Step(0, rows, tokens, [0, 0]).ToArray());
        var mixed = loaded.Step(0, rows, tokens, [0, id]).ToArray();
        Assert.Equal(expected.AsSpan(0, plain.VocabSize).ToArray(), mixed.AsSpan(0, plain.VocabSize).ToArray());
        Assert.NotEqual(expected.AsSpan(plain.VocabSize).ToArray(), mixed.AsSpan(plain.VocabSize).ToArray());
    }

    [Fact]
    public void A_graph_with_adapter_inputs_keeps_its_session_log_to_errors()
    {
        // ONNX Runtime warns once per input with a default at every load; the plain graph keeps the default level.
        Assert.Equal(3, models.WithAdapters.Config.Model.Decoder.SessionOptions.LogSeverityLevel);
        Assert.Null(models.Plain.Config.Model.Decoder.SessionOptions.LogSeverityLevel);
        Assert.DoesNotContain("log_severity_level", File.ReadAllText(Path.Combine(models.Plain.Path, ModelFolder.ConfigFileName)), StringComparison.Ordinal);
    }

    [Fact]
    public void Loading_a_second_adapter_keeps_the_first_exact()
    {
        // The second adapter has a larger rank in the attention projections, so the stacks grow
        // and the first adapter's matrices are copied into padded entries.
        using var runner = LoraFixture.Runner(models.WithAdapters);
        var first = runner.LoadAdapter(LoraFixture.Everywhere.Name);
        var before = Generate(runner, Prompt, 4, first);
        runner.LoadAdapter(LoraFixture.QueryValue.Name);
        var after = Generate(runner, Prompt, 4, first);
        Assert.Equal(before.Tokens, after.Tokens);
        for (var step = 0; step < before.Logits.Length; step++)
            Assert.InRange(Compare.MaxAbsDifference(before.Logits[step], after.Logits[step]), 0, 1e-6f);
        Assert.Equal([LoraFixture.Everywhere.Name, LoraFixture.QueryValue.Name], runner.AdapterNames);
    }

    [Fact]
    public void ONNX_Runtime_loads_the_converted_file_as_its_own_adapter_but_ignores_it_with_IO_binding()
    {
        var adapterFile = Path.Combine(models.WithAdapters.Path, LoraNames.AdaptersFolder, LoraFixture.QueryValue.Name, LoraNames.WeightsFileName);
        using var runner = LoraFixture.Runner(models.WithAdapters);
        var ours = runner.Step(0, [new SequenceStep(0, Prompt.Length)], Prompt, [runner.LoadAdapter(LoraFixture.QueryValue.Name)]).ToArray();
        using var plain = LoraFixture.Runner(models.Plain);
        var baseLogits = plain.Step(0, [new SequenceStep(0, Prompt.Length)], Prompt).ToArray();

        using var sessionOptions = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR };
        using var session = new InferenceSession(models.WithAdapters.DecoderPath, sessionOptions);
        using var adapter = OrtLoraAdapter.Create(adapterFile, null);
        using var runOptions = new RunOptions();
        runOptions.AddActiveLoraAdapter(adapter);

        // A fresh prompt with an empty past, through Run: the adapter's tensors are fed as the
        // graph inputs of the same names, a stack of one picked by the default index [0].
        var c = LoraTestModels.Config;
        var names = new List<string> { "input_ids", "attention_mask" };
        var values = new List<OrtValue>
        {
            OrtValue.CreateTensorValueFromMemory(Prompt.Select(t => (long)t).ToArray(), [1, Prompt.Length]),
            OrtValue.CreateTensorValueFromMemory(Enumerable.Repeat(1L, Prompt.Length).ToArray(), [1, Prompt.Length]),
        };
        for (var layer = 0; layer < c.NumHiddenLayers; layer++)
        {
            foreach (var kind in new[] { "key", "value" })
            {
                names.Add($"past_key_values.{layer}.{kind}");
                values.Add(OrtValue.CreateTensorValueFromMemory(Array.Empty<float>(), [1, c.NumKeyValueHeads, 0, c.HeadDim]));
            }
        }
        try
        {
            using (var outputs = session.Run(runOptions, names, values, ["logits"]))
                Assert.InRange(Compare.MaxAbsDifference(outputs[0].GetTensorDataAsSpan<float>(), ours), 0, 1e-5f);

            // The same session and active adapter through an IO binding: ONNX Runtime runs the base
            // model (it logs that active adapters have no effect there), which is why the runner
            // binds the stacks itself.
            using var binding = session.CreateIoBinding();
            for (var i = 0; i < names.Count; i++)
                binding.BindInput(names[i], values[i]);
            binding.BindOutputToDevice("logits", OrtMemoryInfo.DefaultInstance);
            for (var layer = 0; layer < c.NumHiddenLayers; layer++)
            {
                binding.BindOutputToDevice($"present.{layer}.key", OrtMemoryInfo.DefaultInstance);
                binding.BindOutputToDevice($"present.{layer}.value", OrtMemoryInfo.DefaultInstance);
            }
            session.RunWithBinding(runOptions, binding);
            using var bound = binding.GetOutputValues();
            Assert.InRange(Compare.MaxAbsDifference(bound[0].GetTensorDataAsSpan<float>(), baseLogits), 0, 1e-5f);
        }
        finally
        {
            foreach (var value in values)
                value.Dispose();
        }
    }

    [Fact]
    public void Decode_steps_that_mix_adapters_allocate_no_managed_memory()
    {
        using var runner = LoraFixture.Runner(models.WithAdapters, slots: 3);
        int[] adapters = [runner.LoadAdapter(LoraFixture.Everywhere.Name), 0, runner.LoadAdapter(LoraFixture.QueryValue.Name)];
        var prompt = Tokens(5, 6);
        for (var s = 0; s < 3; s++)
            runner.Step(s, [new SequenceStep(0, prompt.Length)], prompt, [adapters[s]]);
        var rows = new SequenceStep[3];
        int[] next = [7, 8, 9];
        void Decode(int length)
        {
            for (var s = 0; s < rows.Length; s++)
                rows[s] = new SequenceStep(length, 1);
            runner.Step(0, rows, next, adapters);
        }
        Decode(prompt.Length); // the first decode step of a batch creates its binding
        Decode(prompt.Length + 1);

        var before = GC.GetAllocatedBytesForCurrentThread();
        for (var length = prompt.Length + 2; length < prompt.Length + 12; length++)
            Decode(length);
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }

    [Fact]
    public void On_int4_weights_a_float32_adapter_moves_the_logits_as_far_as_merging_does()
    {
        // The adapter stays float32 beside the 4-bit base; the merged model quantizes W + B A
        // instead. Both differ from the exact float32 merged model by about the base's own
        // quantization error, and the adapter run is at least as close to it.
        using var int4 = LoraFixture.Runner(models.Int4WithAdapters);
        var id = int4.LoadAdapter(LoraFixture.Everywhere.Name);
        using var int4Merged = LoraFixture.Runner(models.Int4MergedModels[LoraFixture.Everywhere.Name]);
        using var exact = LoraFixture.Runner(models.MergedModels[LoraFixture.Everywhere.Name]);
        using var int4Plain = LoraFixture.Runner(models.Int4WithAdapters);
        using var fp32Plain = LoraFixture.Runner(models.Plain);

        float Logits(DecoderRunner runner, int adapter, DecoderRunner reference) =>
            Compare.MaxAbsDifference(
                runner.Step(0, [new SequenceStep(0, Prompt.Length)], Prompt, [adapter]).ToArray(),
                reference.Step(0, [new SequenceStep(0, Prompt.Length)], Prompt).ToArray());
        var quantizationError = Logits(int4Plain, 0, fp32Plain);
        var adapterError = Logits(int4, id, exact);
        var mergedError = Logits(int4Merged, 0, exact);

        Assert.InRange(adapterError, 0, 2 * quantizationError);
        Assert.InRange(adapterError, 0, 1.5f * mergedError);
    }

    [Fact]
    public void Unknown_adapters_are_rejected_with_a_message_that_names_them()
    {
        using var runner = LoraFixture.Runner(models.WithAdapters);
        var id = runner.LoadAdapter(LoraFixture.Everywhere.Name);
        var unknown = Assert.Throws<ArgumentException>(() => runner.AdapterId("nope"));
        Assert.Contains("no adapter named 'nope' (loaded: everywhere)", unknown.Message, StringComparison.Ordinal);
        Assert.Equal(id, runner.AdapterId(LoraFixture.Everywhere.Name));

        var outOfRange = Assert.Throws<ArgumentOutOfRangeException>(() => runner.Step(0, [new SequenceStep(0, 2)], [3, 4], [id + 1]));
        Assert.Contains($"adapter id {id + 1} is not loaded", outOfRange.Message, StringComparison.Ordinal);
        var count = Assert.Throws<ArgumentException>(() => runner.Step(0, [new SequenceStep(0, 2)], [3, 4], [id, id]));
        Assert.Contains("2 adapter ids for 1 rows", count.Message, StringComparison.Ordinal);

        var missing = Assert.Throws<ModelLoadException>(() => runner.LoadAdapter("absent"));
        Assert.Contains("has no adapter.onnx_adapter", missing.Message, StringComparison.Ordinal);
        var twice = Assert.Throws<ArgumentException>(() => runner.LoadAdapter(LoraFixture.Everywhere.Name));
        Assert.Contains("already loaded", twice.Message, StringComparison.Ordinal);

        using var plain = LoraFixture.Runner(models.Plain);
        Assert.False(plain.SupportsAdapters);
        var noInputs = Assert.Throws<ModelLoadException>(() => plain.LoadAdapter(LoraFixture.Everywhere.Name, Path.Combine(models.WithAdapters.Path, LoraNames.AdaptersFolder, LoraFixture.Everywhere.Name)));
        Assert.Contains("no adapter inputs", noInputs.Message, StringComparison.Ordinal);

        // The runner still works after all that.
        Assert.Equal(runner.VocabSize, runner.Step(0, [new SequenceStep(0, 2)], [3, 4], [id]).Length);
    }

    [Fact]
    public void A_damaged_adapter_file_is_a_load_error()
    {
        using var temp = new TempFolder();
        var source = Path.Combine(models.WithAdapters.Path, LoraNames.AdaptersFolder, LoraFixture.Everywhere.Name, LoraNames.WeightsFileName);
        var bytes = File.ReadAllBytes(source);
        Directory.CreateDirectory(temp.Combine("truncated"));
        File.WriteAllBytes(Path.Combine(temp.Combine("truncated"), LoraNames.WeightsFileName), bytes[..(bytes.Length / 2)]);
        Directory.CreateDirectory(temp.Combine("other"));
        File.WriteAllBytes(Path.Combine(temp.Combine("other"), LoraNames.WeightsFileName), [.. "12345678TORX"u8]);

        using var runner = LoraFixture.Runner(models.WithAdapters);
        var truncated = Assert.Throws<ModelLoadException>(() => runner.LoadAdapter("truncated", temp.Combine("truncated")));
        Assert.Contains("truncated or malformed adapter file", truncated.Message, StringComparison.Ordinal);
        var other = Assert.Throws<ModelLoadException>(() => runner.LoadAdapter("other", temp.Combine("other")));
        Assert.Contains("not an ONNX Runtime adapter file", other.Message, StringComparison.Ordinal);
        Assert.Empty(runner.AdapterNames);
    }
}
