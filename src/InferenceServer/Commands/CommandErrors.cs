using InferenceServer.Model;
using InferenceServer.ModelBuilder;

namespace InferenceServer.Commands;

/// <summary>Turns the errors a user can cause into one line on stderr and exit code 1, without a stack trace.</summary>
internal static class CommandErrors
{
    public static int Run(Func<int> action)
    {
        try
        {
            return action();
        }
        catch (Exception e) when (e is ModelLoadException or ModelBuildException or ArgumentException or IOException or InvalidOperationException)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 1;
        }
    }
}
