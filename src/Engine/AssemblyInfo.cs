using System.Runtime.CompilerServices;

// The scheduler benchmark drives single iterations of a loop-less engine.
[assembly: InternalsVisibleTo("InferenceServer.Benchmarks")]
