using System.Text;
using InferenceServer.Tokenizer.Decoding;

namespace InferenceServer.Tokenizer;

/// <summary>
/// Turns one sequence's ids into text as they arrive. Text is released only when it is complete
/// UTF-8 (a character split over two byte-level tokens waits for the second), and text that
/// could still grow into a stop string is held back until it cannot. When a stop string
/// appears, the text before it is released and the stream stops; the stop string itself never is.
/// Adding a token allocates nothing: bytes and characters go through buffers the instance keeps.
/// </summary>
public sealed class StreamingDetokenizer
{
    private readonly Tokenizer _tokenizer;
    private readonly TokenTextTable _table;
    private readonly bool _skipSpecialTokens;
    private byte[] _bytes = new byte[64];   // UTF-8 not yet decoded (an unfinished character)
    private int _byteCount;
    private string[] _stops = [];
    private int _longestStop;
    private char[] _chars = new char[256];  // decoded text not yet released
    private int _charCount;
    private char[] _released = new char[256];
    private int _tokensSeen;
    private int _leadingStripLeft;
    private bool _textStarted;
    private int _knownBytesLeft;

    public StreamingDetokenizer(Tokenizer tokenizer, bool skipSpecialTokens = false)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        _tokenizer = tokenizer;
        _table = tokenizer.TokenText;
        _skipSpecialTokens = skipSpecialTokens;
        _leadingStripLeft = _table.LeadingStrip;
    }

    /// <summary>Stop strings: generation ends where one appears, and it is not part of the text.</summary>
    public IReadOnlyList<string> StopStrings
    {
        get => _stops;
        set
        {
            ArgumentNullException.ThrowIfNull(value);
            _stops = value.Where(s => s.Length > 0).ToArray();
            _longestStop = _stops.Length == 0 ? 0 : _stops.Max(s => s.Length);
        }
    }

    /// <summary>
    /// The first this many bytes of the stream are already in the caller's text (a prompt end that
    /// token healing spells again) and are not output; stop strings are looked for after them.
    /// Set before the first token.
    /// </summary>
    public int KnownLeadingBytes
    {
        get => _knownBytesLeft;
        set
        {
            ArgumentOutOfRangeException.ThrowIfNegative(value);
            if (_tokensSeen > 0)
                throw new InvalidOperationException("known leading bytes are set before the first token");
            _knownBytesLeft = value;
        }
    }

    /// <summary>The stop string that ended the stream, or null.</summary>
    public string? MatchedStop { get; private set; }

    public bool Stopped => MatchedStop is not null;

    /// <summary>Adds one id and returns the text that became final (valid until the next call).</summary>
    public ReadOnlySpan<char> Add(int id)
    {
        if (Stopped)
            return default;
        if (!(_skipSpecialTokens && _tokenizer.IsSpecial(id)))
        {
            if (_table.JoinWithSpace && _tokensSeen > 0)
                AppendBytes(" "u8, flush: false);
            AppendBytes(_table.Bytes(id, firstToken: _tokensSeen == 0), flush: false);
            _tokensSeen++;
        }
        return Release(final: false);
    }

    /// <summary>Ends the stream: releases what was held back (an unfinished character becomes U+FFFD).</summary>
    public ReadOnlySpan<char> Finish()
    {
        if (Stopped)
            return default;
        AppendBytes([], flush: true);
        return Release(final: true);
    }

    private void AppendBytes(ReadOnlySpan<byte> bytes, bool flush)
    {
        if (_knownBytesLeft > 0)
        {
            var known = Math.Min(_knownBytesLeft, bytes.Length);
            bytes = bytes[known..];
            _knownBytesLeft -= known;
        }
        if (_byteCount + bytes.Length > _bytes.Length)
            Array.Resize(ref _bytes, Math.Max(_byteCount + bytes.Length, _bytes.Length * 2));
        bytes.CopyTo(_bytes.AsSpan(_byteCount));
        _byteCount += bytes.Length;
        if (_charCount + _byteCount + 1 > _chars.Length)
            Array.Resize(ref _chars, Math.Max(_charCount + _byteCount + 1, _chars.Length * 2));

        // Complete characters only; an unfinished one stays in _bytes until its last byte comes
        // (or the stream ends, when it becomes U+FFFD). Invalid bytes become U+FFFD as in Decode.
        System.Text.Unicode.Utf8.ToUtf16(_bytes.AsSpan(0, _byteCount), _chars.AsSpan(_charCount), out var read, out var produced,
            replaceInvalidSequences: true, isFinalBlock: flush);
        _bytes.AsSpan(read, _byteCount - read).CopyTo(_bytes);
        _byteCount -= read;
        var start = _charCount;
        _charCount += produced;

        // The decoder's leading strip (SentencePiece's space before the first word) applies to the text's start.
        if (!_textStarted && produced > 0)
        {
            var skip = 0;
            while (_leadingStripLeft > 0 && skip < produced && _chars[start + skip] == _table.LeadingStripChar)
            {
                skip++;
                _leadingStripLeft--;
            }
            if (skip > 0)
            {
                _chars.AsSpan(start + skip, produced - skip).CopyTo(_chars.AsSpan(start));
                _charCount -= skip;
            }
            if (_charCount > start)
                _textStarted = true;
        }
    }

    private ReadOnlySpan<char> Release(bool final)
    {
        var text = _chars.AsSpan(0, _charCount);
        var releasable = _charCount;
        if (_stops.Length > 0)
        {
            // A stop string that is now complete ends the stream at its start.
            var earliest = -1;
            foreach (var stop in _stops)
            {
                var at = text.IndexOf(stop, StringComparison.Ordinal);
                if (at >= 0 && (earliest < 0 || at < earliest))
                {
                    earliest = at;
                    MatchedStop = stop;
                }
            }
            if (earliest >= 0)
                releasable = earliest;
            else if (!final)
                releasable = _charCount - HeldBack(text);
        }
        if (releasable > _released.Length)
            Array.Resize(ref _released, Math.Max(releasable, _released.Length * 2));
        text[..releasable].CopyTo(_released);
        text[releasable.._charCount].CopyTo(_chars);
        _charCount = Stopped ? 0 : _charCount - releasable;
        return _released.AsSpan(0, releasable);
    }

    // The longest end of the text that is the beginning of some stop string.
    private int HeldBack(ReadOnlySpan<char> text)
    {
        for (var length = Math.Min(_longestStop - 1, text.Length); length > 0; length--)
        {
            var tail = text[^length..];
            foreach (var stop in _stops)
            {
                if (stop.Length > length && stop.AsSpan().StartsWith(tail, StringComparison.Ordinal))
                    return length;
            }
        }
        return 0;
    }
}
