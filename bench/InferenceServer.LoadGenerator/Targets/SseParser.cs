using System.Buffers;

namespace InferenceServer.LoadGenerator.Targets;

/// <summary>Receives the data of one server-sent event; returns false to stop reading.</summary>
public delegate bool SseEventHandler(ReadOnlySpan<byte> data);

/// <summary>
/// A push parser for server-sent events (text/event-stream): bytes go in as they arrive, split
/// anywhere, and each event's data comes out once its blank line is seen. Lines end with LF,
/// CRLF or CR; "data:" lines of one event are joined with LF; other fields and ":" comments are
/// ignored, since completions streams only use data.
/// </summary>
public sealed class SseParser
{
    private readonly ArrayBufferWriter<byte> _line = new(256);
    private readonly ArrayBufferWriter<byte> _data = new(1024);
    private bool _hasData;
    private bool _afterCarriageReturn;
    private bool _stopped;

    /// <summary>Whether a handler asked to stop; later input is ignored.</summary>
    public bool Stopped => _stopped;

    public void Feed(ReadOnlySpan<byte> bytes, SseEventHandler onEvent)
    {
        ArgumentNullException.ThrowIfNull(onEvent);
        while (!bytes.IsEmpty && !_stopped)
        {
            if (_afterCarriageReturn)
            {
                // CRLF is one line end: the LF after a CR ends nothing more.
                _afterCarriageReturn = false;
                if (bytes[0] == (byte)'\n')
                {
                    bytes = bytes[1..];
                    continue;
                }
            }
            var end = bytes.IndexOfAny((byte)'\n', (byte)'\r');
            if (end < 0)
            {
                _line.Write(bytes);
                return;
            }
            _afterCarriageReturn = bytes[end] == (byte)'\r';
            if (_line.WrittenCount == 0)
            {
                Line(bytes[..end], onEvent);
            }
            else
            {
                _line.Write(bytes[..end]);
                Line(_line.WrittenSpan, onEvent);
                _line.ResetWrittenCount();
            }
            bytes = bytes[(end + 1)..];
        }
    }

    /// <summary>The stream ended: an event still open (no blank line after it) is delivered.</summary>
    public void Finish(SseEventHandler onEvent)
    {
        ArgumentNullException.ThrowIfNull(onEvent);
        if (_stopped)
            return;
        if (_line.WrittenCount > 0)
        {
            Line(_line.WrittenSpan, onEvent);
            _line.ResetWrittenCount();
        }
        Dispatch(onEvent);
    }

    private void Line(ReadOnlySpan<byte> line, SseEventHandler onEvent)
    {
        if (line.IsEmpty)
        {
            Dispatch(onEvent);
            return;
        }
        if (!line.StartsWith("data"u8))
            return;
        var value = line[4..];
        if (!value.IsEmpty)
        {
            // "data" alone is a field with an empty value; "dataX:" is another field.
            if (value[0] != (byte)':')
                return;
            value = value[1..];
            if (!value.IsEmpty && value[0] == (byte)' ')
                value = value[1..];
        }
        if (_hasData)
            _data.Write("\n"u8);
        _data.Write(value);
        _hasData = true;
    }

    private void Dispatch(SseEventHandler onEvent)
    {
        if (!_hasData)
            return;
        var keepGoing = onEvent(_data.WrittenSpan);
        _data.ResetWrittenCount();
        _hasData = false;
        if (!keepGoing)
            _stopped = true;
    }
}
