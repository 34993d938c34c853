using System.Globalization;

namespace InferenceServer.LoadGenerator.Soak;

/// <summary>What a soak run is asked to do (the soak command line, parsed).</summary>
public sealed record SoakSettings
{
    /// <summary>The server program to start (inference-server, or its .dll run through dotnet); null with <see cref="Target"/>.</summary>
    public string? Server { get; init; }

    /// <summary>Extra arguments for the started server's serve command.</summary>
    public IReadOnlyList<string> ServerArguments { get; init; } = [];

    /// <summary>An already running server's HTTP root (http://HOST:PORT); null to start one.</summary>
    public Uri? Target { get; init; }

    /// <summary>That server's gRPC address (http://HOST:PORT); by default the target's host on port 50051.</summary>
    public Uri? Grpc { get; init; }

    /// <summary>The process whose VmRSS is sampled, for a server started elsewhere; 0: none.</summary>
    public int Pid { get; init; }

    /// <summary>The model folder to serve and to size prompts with.</summary>
    public string Model { get; init; } = Path.Combine("models", "minicoder");

    public string? ApiKey { get; init; }
    public string? Manifest { get; init; }
    public string? Out { get; init; }
    public TimeSpan Duration { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>Requests in flight at once; 0: <see cref="SaturationFactor"/> x the server's max batch.</summary>
    public int Concurrency { get; init; }

    public int SaturationFactor { get; init; } = 2;

    /// <summary>Share of requests cancelled by the client at a random point (disconnect / stream reset).</summary>
    public double CancelFraction { get; init; } = 0.3;

    /// <summary>Request kinds to mix, drawn with equal odds: http-stream, http, grpc-stream, grpc.</summary>
    public IReadOnlyList<string> Mix { get; init; } = SoakRequestKinds.All;

    public int PromptTokens { get; init; } = 128;

    /// <summary>Largest max_tokens; each request draws between a quarter of it and all of it.</summary>
    public int OutputTokens { get; init; } = 64;

    public int Seed { get; init; } = 1;
    public TimeSpan SampleInterval { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>The RSS baseline is the first sample at or after this share of the run.</summary>
    public double WarmupFraction { get; init; } = 0.2;

    /// <summary>Most RSS growth from the baseline to the end, in percent, that still passes.</summary>
    public double MaxRssGrowthPercent { get; init; } = 10;

    /// <summary>How long requests still in flight when the run ends may take before they count as lost.</summary>
    public TimeSpan DrainTimeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>How long the engine may take to free everything after the last request.</summary>
    public TimeSpan IdleTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>"90", "90s", "10m" or "1h".</summary>
    public static TimeSpan ParseDuration(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var hasUnit = text.Length > 0 && char.IsLetter(text[^1]);
        var unit = hasUnit ? text[^1] : 's';
        var number = hasUnit ? text[..^1] : text;
        if (!double.TryParse(number, NumberStyles.Float, CultureInfo.InvariantCulture, out var amount) || !(amount > 0))
            throw new ArgumentException($"--duration '{text}': expected a positive number of seconds, or 90s, 10m, 1h");
        return unit switch
        {
            's' => TimeSpan.FromSeconds(amount),
            'm' => TimeSpan.FromMinutes(amount),
            'h' => TimeSpan.FromHours(amount),
            _ => throw new ArgumentException($"--duration '{text}': the unit must be s, m or h"),
        };
    }
}

/// <summary>The kinds of request a soak sends.</summary>
public static class SoakRequestKinds
{
    public const string HttpStream = "http-stream", Http = "http", GrpcStream = "grpc-stream", Grpc = "grpc";

    public static readonly IReadOnlyList<string> All = [HttpStream, Http, GrpcStream, Grpc];

    public static bool IsGrpc(string kind) => kind is Grpc or GrpcStream;

    public static bool IsStreamed(string kind) => kind is HttpStream or GrpcStream;
}
