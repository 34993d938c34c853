using Microsoft.Extensions.Logging;

namespace InferenceServer.Server;

/// <summary>The server's log: one line per entry on standard output, at a level the operator picks.</summary>
public static class ServerLogging
{
    /// <summary>The level names <see cref="Parse"/> takes, least severe first.</summary>
    public static readonly string[] LevelNames = ["trace", "debug", "information", "warning", "error", "critical", "none"];

    public static void Configure(ILoggingBuilder logging, LogLevel level)
    {
        ArgumentNullException.ThrowIfNull(logging);
        logging.ClearProviders();
        logging.AddSimpleConsole(console =>
        {
            console.SingleLine = true;
            console.UseUtcTimestamp = true;
            console.TimestampFormat = "yyyy-MM-ddTHH:mm:ss.fffZ ";
        });
        logging.SetMinimumLevel(level);
        if (level > LogLevel.Debug)
        {
            // The framework's own lines (a start and an end line per request, hosting banners) repeat
            // ours; they speak from warnings on unless debugging. A failed start is reported by serve
            // itself in one line, so the host's error with its stack trace is left out too.
            logging.AddFilter("Microsoft", (LogLevel)Math.Max((int)level, (int)LogLevel.Warning));
            // So do the gRPC library's (a line per call, and each error status it sends).
            logging.AddFilter("Grpc", (LogLevel)Math.Max((int)level, (int)LogLevel.Warning));
            logging.AddFilter("Microsoft.Extensions.Hosting.Internal.Host", (LogLevel)Math.Max((int)level, (int)LogLevel.Critical));
        }
    }

    /// <summary>A level by name (any case; "info" and "warn" too), or null when it is none of <see cref="LevelNames"/>.</summary>
    public static LogLevel? Parse(string name) => name?.Trim().ToLowerInvariant() switch
    {
        "trace" => LogLevel.Trace,
        "debug" => LogLevel.Debug,
        "information" or "info" => LogLevel.Information,
        "warning" or "warn" => LogLevel.Warning,
        "error" => LogLevel.Error,
        "critical" => LogLevel.Critical,
        "none" => LogLevel.None,
        _ => null,
    };
}
