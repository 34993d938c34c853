using System.Diagnostics;
using InferenceServer.Engine.Sampling;

namespace InferenceServer.Engine;

/// <summary>
/// The hand-off between the engine loop (one writer) and the request's consumer (one reader).
/// The engine appends token ids and text into buffers sized when the request is admitted, so a
/// token costs it no allocation; the consumer turns what is new into an event when it reads,
/// on its own thread, merging several tokens into one event when it falls behind.
/// </summary>
public sealed class GenerationOutput : IAsyncEnumerable<GenerationEvent>
{
    private readonly Lock _lock = new();
    private readonly SemaphoreSlim _signal = new(0);
    private readonly int _alternativesPerToken;
    private int[] _tokens;
    private char[] _text;
    private float[] _logprobs;
    private TopLogprob[] _alternatives;
    private int[] _alternativeCounts;
    private int _tokenCount;
    private int _textLength;
    private FinishReason? _finish;
    private Usage _usage;
    private string? _matchedStop;
    private Exception? _fault;
    private int _enumerated;

    private const int InitialCapacityLimit = 512;

    internal GenerationOutput(int expectedTokens, int alternativesPerToken)
    {
        _alternativesPerToken = alternativesPerToken;
        // Sized for what most requests generate, not for the client's limit (which may be the whole
        // context): a longer generation grows the buffers a few times, doubling each time.
        var capacity = Math.Clamp(expectedTokens, 4, InitialCapacityLimit);
        _tokens = new int[capacity];
        _text = new char[capacity * 4];
        _logprobs = alternativesPerToken > 0 ? new float[capacity] : [];
        _alternativeCounts = alternativesPerToken > 0 ? new int[capacity] : [];
        _alternatives = alternativesPerToken > 0 ? new TopLogprob[capacity * alternativesPerToken] : [];
    }

    // When the consumer side gave up (cancellation or no longer reading), as a Stopwatch timestamp; 0 while wanted.
    private long _abandonedAt;

    /// <summary>Whether the consumer gave up; the engine polls it at the start of every iteration.</summary>
    internal bool Abandoned => Volatile.Read(ref _abandonedAt) != 0;

    /// <summary>Tokens appended so far (any thread).</summary>
    internal int TokenCount => Volatile.Read(ref _tokenCount);

    /// <summary>The Stopwatch timestamp of <see cref="Abandon"/> (0 if never).</summary>
    internal long AbandonedAt => Volatile.Read(ref _abandonedAt);

    /// <summary>Told, on the abandoning thread, when the output is first abandoned.</summary>
    internal IAbandonListener? Listener { get; set; }

    /// <summary>Marks the output unwanted (any thread; the first call's time is kept).</summary>
    internal void Abandon()
    {
        if (Interlocked.CompareExchange(ref _abandonedAt, Stopwatch.GetTimestamp(), 0) == 0)
            Listener?.Abandoned(this);
    }

    internal void Append(int token, ReadOnlySpan<char> text, float logprob, ReadOnlySpan<TopLogprob> alternatives)
    {
        lock (_lock)
        {
            if (_tokenCount == _tokens.Length)
                Grow();
            _tokens[_tokenCount] = token;
            if (_alternativesPerToken > 0)
            {
                _logprobs[_tokenCount] = logprob;
                _alternativeCounts[_tokenCount] = alternatives.Length;
                alternatives.CopyTo(_alternatives.AsSpan(_tokenCount * _alternativesPerToken));
            }
            _tokenCount++;
            AppendTextLocked(text);
        }
        _signal.Release();
    }

    internal void AppendText(ReadOnlySpan<char> text)
    {
        if (text.IsEmpty)
            return;
        lock (_lock)
            AppendTextLocked(text);
        _signal.Release();
    }

    internal void Finish(FinishReason reason, Usage usage, string? matchedStop)
    {
        lock (_lock)
        {
            if (_finish is not null)
                return;
            _finish = reason;
            _usage = usage;
            _matchedStop = matchedStop;
        }
        _signal.Release();
    }

    /// <summary>
    /// Ends the output because the engine failed: the reader gets what was generated so far, then
    /// an <see cref="EngineFaultedException"/> instead of a final event.
    /// </summary>
    internal void Fail(Exception fault)
    {
        lock (_lock)
        {
            if (_finish is not null || _fault is not null)
                return;
            _fault = fault;
        }
        _signal.Release();
    }

    internal bool IsFinished
    {
        get
        {
            lock (_lock)
                return _finish is not null;
        }
    }

    private void AppendTextLocked(ReadOnlySpan<char> text)
    {
        if (_textLength + text.Length > _text.Length)
            Array.Resize(ref _text, Math.Max(_textLength + text.Length, _text.Length * 2));
        text.CopyTo(_text.AsSpan(_textLength));
        _textLength += text.Length;
    }

    private void Grow()
    {
        var capacity = _tokens.Length * 2;
        Array.Resize(ref _tokens, capacity);
        if (_alternativesPerToken > 0)
        {
            Array.Resize(ref _logprobs, capacity);
            Array.Resize(ref _alternativeCounts, capacity);
            Array.Resize(ref _alternatives, capacity * _alternativesPerToken);
        }
    }

    /// <summary>Reads the events; leaving the loop early (or cancelling) cancels the generation.</summary>
    public async IAsyncEnumerator<GenerationEvent> GetAsyncEnumerator(CancellationToken cancellationToken = default)
    {
        if (Interlocked.Exchange(ref _enumerated, 1) != 0)
            throw new InvalidOperationException("a generation's output can be read once");
        int tokensRead = 0, textRead = 0;
        var finished = false;
        try
        {
            while (!finished)
            {
                try
                {
                    await _signal.WaitAsync(cancellationToken).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    Abandon();
                    throw;
                }
                GenerationEvent? next;
                Exception? fault;
                lock (_lock)
                {
                    next = TakeLocked(ref tokensRead, ref textRead);
                    finished = _finish is not null;
                    fault = _fault;
                }
                if (next is not null)
                    yield return next;
                if (fault is not null)
                {
                    finished = true;
                    throw new EngineFaultedException(fault);
                }
            }
        }
        finally
        {
            if (!finished)
                Abandon();
        }
    }

    private GenerationEvent? TakeLocked(ref int tokensRead, ref int textRead)
    {
        var newTokens = _tokenCount - tokensRead;
        var newText = _textLength - textRead;
        if (newTokens == 0 && newText == 0 && _finish is null)
            return null;
        var ids = _tokens.AsSpan(tokensRead, newTokens).ToArray();
        List<TokenLogprobs>? logprobs = null;
        if (_alternativesPerToken > 0 && newTokens > 0)
        {
            logprobs = new List<TokenLogprobs>(newTokens);
            for (var i = tokensRead; i < _tokenCount; i++)
            {
                var alternatives = _alternatives.AsSpan(i * _alternativesPerToken, _alternativeCounts[i]).ToArray();
                logprobs.Add(new TokenLogprobs(_tokens[i], _logprobs[i], alternatives));
            }
        }
        var text = new string(_text, textRead, newText);
        tokensRead = _tokenCount;
        textRead = _textLength;
        return new GenerationEvent(text, ids, logprobs, _finish, _finish is null ? null : _usage, _matchedStop);
    }

    /// <summary>Reads everything to the end: all text, all ids and the final event.</summary>
    public async Task<GenerationResult> CollectAsync(CancellationToken cancellationToken = default)
    {
        var text = new System.Text.StringBuilder();
        var ids = new List<int>();
        var logprobs = new List<TokenLogprobs>();
        await foreach (var e in this.WithCancellation(cancellationToken).ConfigureAwait(false))
        {
            text.Append(e.Text);
            ids.AddRange(e.TokenIds);
            if (e.Logprobs is not null)
                logprobs.AddRange(e.Logprobs);
            if (e.IsFinal)
                return new GenerationResult(text.ToString(), ids, logprobs, e.FinishReason!.Value, e.Usage!.Value, e.MatchedStop);
        }
        throw new InvalidOperationException("the generation ended without a final event");
    }
}

/// <summary>A whole generation, as <see cref="GenerationOutput.CollectAsync"/> gathers it.</summary>
public sealed record GenerationResult(string Text, IReadOnlyList<int> TokenIds, IReadOnlyList<TokenLogprobs> Logprobs, FinishReason FinishReason, Usage Usage, string? MatchedStop);

/// <summary>Who wants to know at once that a consumer gave up (the engine, to end a run computing only for it).</summary>
internal interface IAbandonListener
{
    void Abandoned(GenerationOutput output);
}
