using System.Runtime.CompilerServices;

// The scheduler benchmark drives single iterations of a loop-less engine.
[assembly: InternalsVisibleTo("InferenceServer.Benchmarks")]

// The engine's tests check its parts alone (the step cost model that sizes prefill chunks).
[assembly: InternalsVisibleTo("InferenceServer.Engine.Tests")]
