using System.Diagnostics;
using System.Reflection;
using InferenceServer.Model;
using InferenceServer.Model.Tests;
using Xunit;
using Xunit.Sdk;

// Runs every test of the test classes that hold at least one [CudaFact] test, the way xunit would
// for these simple cases (a class fixture, facts, theories with inline or member data), and prints
// one line per test: PASS, FAIL (with the reason) or SKIP (with the reason).
//
//   cuda-checks [--require-cuda] [--filter TEXT] [--list]
//
// Exit code: 0 when nothing failed; 1 when a test failed; 2 with --require-cuda when a CUDA test
// was skipped (no device, no CUDA build, no CUDA libraries on the library path).
var requireCuda = args.Contains("--require-cuda");
var filterAt = Array.IndexOf(args, "--filter");
var filter = filterAt >= 0 && filterAt + 1 < args.Length ? args[filterAt + 1] : null;
var listOnly = args.Contains("--list");

Assembly[] assemblies = [typeof(PagedCudaRunnerTests).Assembly];
var classes = assemblies.SelectMany(a => a.GetExportedTypes())
    .Where(t => t is { IsClass: true, IsAbstract: false } && t.GetMethods().Any(IsCudaTest))
    .OrderBy(t => t.FullName, StringComparer.Ordinal)
    .ToArray();

Console.WriteLine($"CUDA: {CudaRuntime.Unavailable() ?? "available"}");
int passed = 0, failed = 0, skipped = 0, cudaSkipped = 0;
foreach (var type in classes)
{
    var tests = type.GetMethods()
        .Where(m => m.GetCustomAttribute<FactAttribute>() is not null)
        .Where(m => filter is null || $"{type.Name}.{m.Name}".Contains(filter, StringComparison.OrdinalIgnoreCase))
        .OrderBy(m => m.MetadataToken)
        .ToArray();
    if (tests.Length == 0)
        continue;
    if (listOnly)
    {
        foreach (var test in tests)
            Console.WriteLine($"{type.Name}.{test.Name}");
        continue;
    }

    object? fixture = null;
    var fixtureType = type.GetInterfaces()
        .FirstOrDefault(i => i.IsGenericType && i.GetGenericTypeDefinition() == typeof(IClassFixture<>))?.GetGenericArguments()[0];
    var runnable = tests.Where(t => t.GetCustomAttribute<FactAttribute>()!.Skip is null).ToArray();
    string? fixtureError = null;
    if (fixtureType is not null && runnable.Length > 0)
    {
        try
        {
            fixture = Activator.CreateInstance(fixtureType);
        }
        catch (TargetInvocationException e)
        {
            fixtureError = $"fixture {fixtureType.Name}: {Describe(e.InnerException ?? e)}";
        }
    }

    foreach (var test in tests)
    {
        var fact = test.GetCustomAttribute<FactAttribute>()!;
        var name = $"{type.Name}.{test.Name}";
        if (fact.Skip is { } reason)
        {
            skipped++;
            if (IsCudaTest(test))
                cudaSkipped++;
            Console.WriteLine($"SKIP {name}: {reason}");
            continue;
        }
        foreach (var arguments in Cases(test))
        {
            var label = arguments.Length == 0 ? name : $"{name}({string.Join(", ", arguments)})";
            var clock = Stopwatch.StartNew();
            var error = fixtureError ?? Run(type, fixture, test, arguments);
            if (error is null)
            {
                passed++;
                Console.WriteLine($"PASS {label} ({clock.Elapsed.TotalSeconds:0.00} s)");
            }
            else
            {
                failed++;
                Console.WriteLine($"FAIL {label}: {error}");
            }
        }
    }
    (fixture as IDisposable)?.Dispose();
}

if (listOnly)
    return 0;
Console.WriteLine($"{passed} passed, {failed} failed, {skipped} skipped ({cudaSkipped} of them CUDA tests)");
return failed > 0 ? 1 : requireCuda && cudaSkipped > 0 ? 2 : 0;

static bool IsCudaTest(MethodInfo method) => method.GetCustomAttribute<CudaFactAttribute>() is not null;

// A fact runs once with no arguments; a theory once per row of its data attributes.
static IEnumerable<object?[]> Cases(MethodInfo test) =>
    test.GetCustomAttribute<TheoryAttribute>() is null
        ? [[]]
        : test.GetCustomAttributes<DataAttribute>().SelectMany(data => data.GetData(test));

static string? Run(Type type, object? fixture, MethodInfo test, object?[] arguments)
{
    object? instance = null;
    try
    {
        var constructor = type.GetConstructors().Single();
        instance = constructor.Invoke(constructor.GetParameters().Length == 0 ? [] : [fixture]);
        var result = test.Invoke(instance, arguments);
        if (result is Task task)
            task.GetAwaiter().GetResult();
        return null;
    }
    catch (TargetInvocationException e)
    {
        return Describe(e.InnerException ?? e);
    }
    catch (Exception e) when (e is XunitException or InvalidOperationException or ArgumentException)
    {
        return Describe(e);
    }
    finally
    {
        (instance as IDisposable)?.Dispose();
    }
}

static string Describe(Exception e)
{
    var where = e.StackTrace?.Split('\n').Select(l => l.Trim()).FirstOrDefault(l => l.Contains(".Tests.", StringComparison.Ordinal));
    return $"{e.GetType().Name}: {e.Message.ReplaceLineEndings(" ")}{(where is null ? "" : $" [{where}]")}";
}
