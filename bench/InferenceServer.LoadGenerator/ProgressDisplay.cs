using Spectre.Console;

namespace InferenceServer.LoadGenerator;

/// <summary>One line of progress: a level or a reference run.</summary>
public interface IProgressLine
{
    /// <summary>Fraction done, 0..1.</summary>
    void Report(double fraction);

    /// <summary>Done; <paramref name="summary"/> is a short result for the plain display.</summary>
    void Complete(string summary);
}

/// <summary>Where the workloads report progress.</summary>
public interface IProgressDisplay
{
    IProgressLine Start(string description);
}

/// <summary>No display at all (tests).</summary>
public sealed class SilentProgress : IProgressDisplay
{
    public static SilentProgress Instance { get; } = new();

    public IProgressLine Start(string description) => new Line();

    private sealed class Line : IProgressLine
    {
        public void Report(double fraction)
        {
        }

        public void Complete(string summary)
        {
        }
    }
}

/// <summary>One line per finished level on standard error: for redirected output and --no-progress.</summary>
public sealed class PlainProgress : IProgressDisplay
{
    public IProgressLine Start(string description) => new Line(description);

    private sealed class Line(string description) : IProgressLine
    {
        public void Report(double fraction)
        {
        }

        public void Complete(string summary) => Console.Error.WriteLine($"{description}: {summary}");
    }
}

/// <summary>Spectre.Console's live progress bars, one per level, while the whole benchmark runs inside it.</summary>
public sealed class SpectreProgress : IProgressDisplay
{
    private readonly ProgressContext _context;

    private SpectreProgress(ProgressContext context) => _context = context;

    public static Task RunAsync(Func<IProgressDisplay, Task> work) =>
        AnsiConsole.Progress()
            .AutoClear(false)
            .HideCompleted(false)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
            .StartAsync(context => work(new SpectreProgress(context)));

    public IProgressLine Start(string description) => new Line(_context.AddTask(Markup.Escape(description), maxValue: 1.0));

    private sealed class Line(ProgressTask task) : IProgressLine
    {
        public void Report(double fraction) => task.Value = Math.Clamp(fraction, 0, 1);

        public void Complete(string summary)
        {
            task.Description = task.Description + " [grey]" + Markup.Escape(summary) + "[/]";
            task.Value = 1;
            task.StopTask();
        }
    }
}
