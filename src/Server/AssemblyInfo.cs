using System.Runtime.CompilerServices;

// The tests check the API key comparison and the failure classification on their own, too.
[assembly: InternalsVisibleTo("InferenceServer.Server.Tests")]
// The benchmarks time the request check the gRPC port runs before parsing.
[assembly: InternalsVisibleTo("InferenceServer.Benchmarks")]
