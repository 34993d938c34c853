using System.Diagnostics;
using System.Text.Json.Nodes;
using Microsoft.ML.OnnxRuntimeGenAI;
using GenAiModel = Microsoft.ML.OnnxRuntimeGenAI.Model;

namespace InferenceServer.Peers;

/// <summary>
/// ONNX Runtime GenAI on our model folder (it reads genai_config.json and model.onnx as they are):
/// one generator per stream, each on its own thread sending its prompts one after another, greedy,
/// exactly the requested number of new tokens. The generators share the model and its ONNX Runtime
/// session; GenAI has no batching across generators on the CPU, so each step runs alone.
/// </summary>
internal static class GenAiRunner
{
    public static EngineResult Run(string modelFolder, PromptSet prompts, int threads, int contextLength)
    {
        using var handle = new OgaHandle();
        using var model = LoadModel(modelFolder, threads);

        Generate(model, prompts.Warmup, 4, contextLength, null);
        var levels = new List<EngineLevel>();
        foreach (var level in prompts.Levels)
        {
            var requests = new List<EngineRequest>();
            var started = Stopwatch.GetTimestamp();
            var streams = level.Streams.Select(streamPrompts => Task.Factory.StartNew(() =>
            {
                foreach (var prompt in streamPrompts)
                {
                    var sent = Stopwatch.GetTimestamp();
                    var times = new double[prompts.OutputTokens];
                    var produced = Generate(model, prompt, prompts.OutputTokens, contextLength, times);
                    lock (requests)
                    {
                        requests.Add(new EngineRequest
                        {
                            PromptTokens = prompt.Length,
                            OutputTokens = produced,
                            SentMs = Stopwatch.GetElapsedTime(started, sent).TotalMilliseconds,
                            TokenMs = times[..produced],
                        });
                    }
                }
            }, TaskCreationOptions.LongRunning)).ToArray();
            Task.WaitAll(streams);
            levels.Add(new EngineLevel { Streams = level.Streams.Length, WallMs = Stopwatch.GetElapsedTime(started).TotalMilliseconds, Requests = requests });
            Console.Error.WriteLine($"onnxruntime-genai: {level.Streams.Length} streams done");
        }
        return new EngineResult { Engine = "onnxruntime-genai", Threads = threads, Levels = levels };
    }

    /// <summary>The model folder on the CPU, its session with <paramref name="threads"/> intra-op threads.</summary>
    public static GenAiModel LoadModel(string modelFolder, int threads)
    {
        using var config = new Config(modelFolder);
        config.ClearProviders();
        // The intra-op threads of its session, as llama.cpp's and our engine's thread counts are set.
        var sessionOptions = new JsonObject { ["intra_op_num_threads"] = threads, ["inter_op_num_threads"] = 1 };
        config.Overlay(new JsonObject { ["model"] = new JsonObject { ["decoder"] = new JsonObject { ["session_options"] = sessionOptions } } }.ToJsonString());
        return new GenAiModel(config);
    }

    // Greedy generation of exactly `count` tokens (min_length keeps an end-of-sequence token from
    // stopping it early); times[i] is when token i was available, from the call. max_length is the
    // size of the generator's KV buffers, given like the other engines' context length.
    private static int Generate(GenAiModel model, int[] prompt, int count, int contextLength, double[]? times)
    {
        var start = Stopwatch.GetTimestamp();
        using var parameters = new GeneratorParams(model);
        if (prompt.Length + count > contextLength)
            throw new UsageException($"a prompt of {prompt.Length} tokens and {count} new ones do not fit a context of {contextLength}");
        parameters.SetSearchOption("max_length", contextLength);
        parameters.SetSearchOption("min_length", prompt.Length + count);
        parameters.SetSearchOption("do_sample", false);
        using var generator = new Generator(model, parameters);
        generator.AppendTokens(prompt);
        var produced = 0;
        while (produced < count && !generator.IsDone())
        {
            generator.GenerateNextToken();
            if (times is not null)
                times[produced] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
            produced++;
        }
        return produced;
    }
}
