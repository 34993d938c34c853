namespace InferenceServer.Engine;

/// <summary>
/// What model steps have cost lately, to size prefill chunks so that an iteration stays within a
/// time budget: a long prompt is then computed over several iterations, and every running
/// sequence's next token and every cancellation wait at most about one budget. Costs are moving
/// averages (prefill per token, decode per step) of the measured steps; the loop thread alone uses it.
/// </summary>
internal sealed class StepCost(TimeSpan budget)
{
    /// <summary>The fewest prompt tokens an iteration computes, however tight the budget: prompts always progress.</summary>
    public const int MinPrefillTokens = 16;

    /// <summary>Prefill tokens an iteration computes before any prefill has been measured.</summary>
    public const int FirstPrefillTokens = 64;

    // Weight of the newest measurement: recent enough to follow a change of load or prompt length.
    private const double Smoothing = 0.25;

    private double _prefillSecondsPerToken;
    private double _decodeSeconds;

    /// <summary>Whether there is a budget (zero turns sizing by time off).</summary>
    public bool Enabled { get; } = budget > TimeSpan.Zero;

    public void Prefill(int tokens, TimeSpan elapsed)
    {
        // One-token steps say more about the step's fixed cost than about a token's.
        if (tokens < MinPrefillTokens)
            return;
        var perToken = elapsed.TotalSeconds / tokens;
        _prefillSecondsPerToken = _prefillSecondsPerToken == 0 ? perToken : _prefillSecondsPerToken + (Smoothing * (perToken - _prefillSecondsPerToken));
    }

    public void Decode(TimeSpan elapsed) =>
        _decodeSeconds = _decodeSeconds == 0 ? elapsed.TotalSeconds : _decodeSeconds + (Smoothing * (elapsed.TotalSeconds - _decodeSeconds));

    /// <summary>What prefilling this many tokens is expected to take, in seconds; 0 before any prefill was measured.</summary>
    public double PrefillSeconds(int tokens) => tokens * _prefillSecondsPerToken;

    /// <summary>
    /// Prompt tokens this iteration can compute within the budget, leaving room for the decode
    /// step of <paramref name="decoding"/> sequences (int.MaxValue when there is no budget). Each
    /// of the <paramref name="prompts"/> sequences waiting for prompt tokens gets at least as much
    /// of an iteration as each decoding one: where the decodes alone take most of the budget or
    /// more (many sequences, a large model), it cannot hold anyway, and prompts cut to a few
    /// tokens an iteration would each pay a pass over the weights for those few while a queue of
    /// them waits for a first token.
    /// </summary>
    public int PrefillTokens(int decoding, int prompts)
    {
        if (!Enabled)
            return int.MaxValue;
        if (_prefillSecondsPerToken == 0)
            return FirstPrefillTokens;
        var left = budget.TotalSeconds;
        if (decoding > 0)
            left = Math.Max(left - _decodeSeconds, _decodeSeconds * prompts / decoding);
        var tokens = left / _prefillSecondsPerToken;
        return tokens >= int.MaxValue ? int.MaxValue : Math.Max(MinPrefillTokens, (int)tokens);
    }
}
