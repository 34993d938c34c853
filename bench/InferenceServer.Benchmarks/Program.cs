using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Diagnosers;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;

// "engine": whole requests through the engine with the 20M model (a report, not BenchmarkDotNet).
if (args is ["engine", ..])
{
    await InferenceServer.Benchmarks.EngineThroughput.RunAsync();
    return;
}

// "adapters [ROUNDS [THREADS]]": decode steps with and without LoRA adapters, the cases timed in turns (a report).
if (args is ["adapters", .. var adapterArgs])
{
    int Argument(int index, int fallback) => adapterArgs.Length > index ? int.Parse(adapterArgs[index], System.Globalization.CultureInfo.InvariantCulture) : fallback;
    InferenceServer.Benchmarks.AdapterThroughput.Run(Argument(0, 40), Argument(1, 0));
    return;
}

// "tokenizer-libraries [NAME...]": exactness, speed and allocations of our tokenizer and two
// libraries on the oracle's tokenizers (a table, not BenchmarkDotNet; src/Tokenizer/README.md).
// "--show N" prints the first N mismatching strings of each to stderr.
if (args is ["tokenizer-libraries", .. var rest])
{
    var show = 0;
    if (rest is ["--show", var count, .. var others])
    {
        show = int.Parse(count, System.Globalization.CultureInfo.InvariantCulture);
        rest = others;
    }
    InferenceServer.Benchmarks.TokenizerLibraries.TokenizerLibraryComparison.Run(
        rest.Length > 0 ? rest : ["qwen3", "llama3", "deepseek_v3", "llama2", "minicoder"], show);
    return;
}

// Every benchmark of the repository, chosen with --filter (e.g. --filter '*DecodeStep*').
// They run in-process: the native ONNX Runtime library sits beside this program, and a separate
// generated project per benchmark would have to find it again.
var config = DefaultConfig.Instance
    .AddJob(Job.Default.WithToolchain(InProcessEmitToolchain.Instance))
    .AddDiagnoser(MemoryDiagnoser.Default);
BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args, config);
