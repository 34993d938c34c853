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

// Every benchmark of the repository, chosen with --filter (e.g. --filter '*DecodeStep*').
// They run in-process: the native ONNX Runtime library sits beside this program, and a separate
// generated project per benchmark would have to find it again.
var config = DefaultConfig.Instance
    .AddJob(Job.Default.WithToolchain(InProcessEmitToolchain.Instance))
    .AddDiagnoser(MemoryDiagnoser.Default);
BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args, config);
