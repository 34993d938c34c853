using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace InferenceServer.Server.Tests;

/// <summary>A log provider that keeps every entry, for tests of what the server logs.</summary>
internal sealed class LogCapture : ILoggerProvider
{
    public sealed record Entry(string Category, LogLevel Level, string Message, Exception? Exception);

    private readonly ConcurrentQueue<Entry> _entries = new();

    public IReadOnlyList<Entry> Entries => [.. _entries];

    public IReadOnlyList<Entry> InCategory(string category) => [.. _entries.Where(e => e.Category == category)];

    /// <summary>Waits (up to 3 s) for an entry that matches: a request's line is written after its response.</summary>
    public async Task<Entry> WaitForAsync(Func<Entry, bool> match)
    {
        for (var i = 0; i < 300; i++)
        {
            if (_entries.FirstOrDefault(match) is { } entry)
                return entry;
            await Task.Delay(10);
        }
        Assert.Fail("no such log entry; the log holds:\n" + string.Join('\n', _entries.Select(e => $"{e.Level} {e.Category}: {e.Message}")));
        return null!;
    }

    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

    public void Dispose()
    {
    }

    private sealed class Logger(LogCapture owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel != LogLevel.None;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            owner._entries.Enqueue(new Entry(category, logLevel, formatter(state, exception), exception));
    }
}
