using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace InferenceServer.Server;

/// <summary>How a server stops.</summary>
public static partial class ServerShutdown
{
    /// <summary>How long calls get to end once the grace period is over (they only have to write their last words).</summary>
    private static readonly TimeSpan CutoffWait = TimeSpan.FromSeconds(5);

    /// <summary>How long closing the connections may take once no call runs.</summary>
    private static readonly TimeSpan CloseWait = TimeSpan.FromSeconds(5);

    /// <summary>
    /// Draining: health turns NOT_SERVING / 503 "draining" and new calls get UNAVAILABLE / 503 while
    /// the ports keep listening; calls in flight get <paramref name="grace"/> to finish. Then the
    /// server ends the calls still running itself (<see cref="ServerState.Cutoff"/>: a 503 body, an
    /// SSE error event and [DONE], UNAVAILABLE trailers), and only then closes the connections.
    /// </summary>
    public static async Task DrainAsync(WebApplication app, ServerState state, TimeSpan grace)
    {
        ArgumentNullException.ThrowIfNull(app);
        ArgumentNullException.ThrowIfNull(state);
        var logger = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(ServerShutdown).FullName!);
        state.State = ServingState.Draining;
        Draining(logger, state.CallsInFlight, grace.TotalSeconds);
        if (!await state.WaitForCallsAsync(includeOpenEnded: false, grace).ConfigureAwait(false))
            GraceOver(logger, state.CallsInFlight);
        // Also ends the open-ended streams (health watches, reflection), which nobody waits for.
        state.CutOff();
        await state.WaitForCallsAsync(includeOpenEnded: true, CutoffWait).ConfigureAwait(false);
        using var closing = new CancellationTokenSource(CloseWait);
        await app.StopAsync(closing.Token).ConfigureAwait(false);
    }

    [LoggerMessage(EventId = 10, Level = LogLevel.Information, Message = "shutting down: {Calls} calls in flight get {GraceSeconds} s to finish; new calls are refused")]
    private static partial void Draining(ILogger logger, int calls, double graceSeconds);

    [LoggerMessage(EventId = 11, Level = LogLevel.Warning, Message = "the grace period is over: ending the {Calls} calls still running")]
    private static partial void GraceOver(ILogger logger, int calls);
}

/// <summary>The serving state shared by health checks and both front ends, and the calls in flight.</summary>
public sealed class ServerState
{
    private volatile ServingState _state = ServingState.Loading;
#pragma warning disable CA2213 // no timer, so nothing to release; it lives as long as the server
    private readonly CancellationTokenSource _cutoff = new();
#pragma warning restore CA2213
    private int _calls, _openEnded;

    public ServingState State
    {
        get => _state;
        set
        {
            _state = value;
            Changed?.Invoke(value);
        }
    }

    public event Action<ServingState>? Changed;

    /// <summary>Cancelled when a shutdown's grace period is over: calls still running are ended by the server.</summary>
    public CancellationToken Cutoff => _cutoff.Token;

    /// <summary>Calls running now, other than open-ended streams.</summary>
    public int CallsInFlight => Volatile.Read(ref _calls);

    internal void CutOff() => _cutoff.Cancel();

    internal void CallStarted(bool openEnded) => Interlocked.Increment(ref openEnded ? ref _openEnded : ref _calls);

    internal void CallEnded(bool openEnded) => Interlocked.Decrement(ref openEnded ? ref _openEnded : ref _calls);

    /// <summary>Whether the calls ended within <paramref name="timeout"/>. Polls: it runs once, at shutdown.</summary>
    internal async Task<bool> WaitForCallsAsync(bool includeOpenEnded, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (Volatile.Read(ref _calls) > 0 || (includeOpenEnded && Volatile.Read(ref _openEnded) > 0))
        {
            if (DateTime.UtcNow >= deadline)
                return false;
            await Task.Delay(10).ConfigureAwait(false);
        }
        return true;
    }
}
