using System.Buffers;
using System.Buffers.Binary;
using System.IO.Pipelines;
using System.Text;
using Google.Protobuf;
using Google.Protobuf.Reflection;

namespace InferenceServer.Server.Grpc;

/// <summary>
/// gRPC's length-prefixed messages over an HTTP/2 body: a 1-byte compressed flag, a 4-byte
/// big-endian length, then the protobuf bytes. Reading parses straight from the pipe's buffers;
/// writing sizes the message first and serializes into the pipe's memory, so framing itself
/// allocates nothing.
/// </summary>
public static class GrpcFraming
{
    public const int HeaderSize = 5;

    /// <summary>
    /// The next message, or null when the client finished sending. A frame that is cut short,
    /// compressed, over <paramref name="maxBytes"/>, or not a valid message throws a
    /// <see cref="RequestException"/> with the status to answer.
    /// </summary>
    public static async ValueTask<T?> ReadMessageAsync<T>(PipeReader reader, MessageParser<T> parser, int maxBytes, CancellationToken cancellationToken)
        where T : class, IMessage<T>
    {
        ArgumentNullException.ThrowIfNull(reader);
        ArgumentNullException.ThrowIfNull(parser);
        while (true)
        {
            var result = await reader.ReadAsync(cancellationToken).ConfigureAwait(false);
            var buffer = result.Buffer;
            if (TryReadFrame(ref buffer, maxBytes, out var payload))
            {
                if (Utf8Fields.FindInvalid(Descriptor(parser), payload) is { } field)
                {
                    reader.AdvanceTo(buffer.Start);
                    throw new RequestException(GrpcStatus.InvalidArgument, $"{field} is not valid UTF-8");
                }
                T message;
                try
                {
                    message = parser.ParseFrom(payload);
                }
                catch (InvalidProtocolBufferException)
                {
                    reader.AdvanceTo(buffer.Start);
                    throw new RequestException(GrpcStatus.Internal, $"the request message is not a valid {typeof(T).Name} (malformed protobuf)");
                }
                reader.AdvanceTo(buffer.Start);
                return message;
            }
            if (result.IsCompleted)
            {
                var left = buffer.Length;
                reader.AdvanceTo(buffer.End);
                if (left == 0)
                    return null;
                throw new RequestException(GrpcStatus.Internal, $"the request ended inside a message frame ({left} bytes of an incomplete frame)");
            }
            reader.AdvanceTo(buffer.Start, buffer.End);
        }
    }

    private static MessageDescriptor Descriptor<T>(MessageParser<T> parser) where T : IMessage<T> =>
        Descriptors<T>.Value ??= parser.ParseFrom(ReadOnlySpan<byte>.Empty).Descriptor;

    /// <summary>One message type's descriptor, found once.</summary>
    private static class Descriptors<T>
    {
        public static MessageDescriptor? Value;
    }

    /// <summary>Takes one whole frame off the front of <paramref name="buffer"/>, if it is all there.</summary>
    public static bool TryReadFrame(ref ReadOnlySequence<byte> buffer, int maxBytes, out ReadOnlySequence<byte> payload)
    {
        payload = default;
        if (buffer.Length < HeaderSize)
            return false;
        Span<byte> header = stackalloc byte[HeaderSize];
        buffer.Slice(0, HeaderSize).CopyTo(header);
        if (header[0] > 1)
            throw new RequestException(GrpcStatus.Internal, $"invalid frame: compressed flag {header[0]}");
        if (header[0] == 1)
            throw new RequestException(GrpcStatus.Unimplemented, "compressed messages are not supported (grpc-encoding identity only)");
        var length = BinaryPrimitives.ReadUInt32BigEndian(header[1..]);
        if (length > (uint)maxBytes)
            throw new RequestException(GrpcStatus.ResourceExhausted, $"the request message is {length} bytes; the limit is {maxBytes}");
        if (buffer.Length < HeaderSize + length)
            return false;
        payload = buffer.Slice(HeaderSize, length);
        buffer = buffer.Slice(HeaderSize + length);
        return true;
    }

    /// <summary>Writes one message frame into <paramref name="writer"/> (flushing is the caller's).</summary>
    public static void WriteMessage(IBufferWriter<byte> writer, IMessage message)
    {
        ArgumentNullException.ThrowIfNull(writer);
        ArgumentNullException.ThrowIfNull(message);
        var size = message.CalculateSize();
        var header = writer.GetSpan(HeaderSize);
        header[0] = 0;
        BinaryPrimitives.WriteUInt32BigEndian(header[1..], (uint)size);
        writer.Advance(HeaderSize);
        if (size > 0)
        {
            var body = writer.GetSpan(size);
            message.WriteTo(body[..size]);
            writer.Advance(size);
        }
    }

    /// <summary>grpc-message is percent-encoded: printable ASCII except '%' as is, everything else as %XX of its UTF-8.</summary>
    public static string EncodeMessage(string message)
    {
        ArgumentNullException.ThrowIfNull(message);
        var plain = true;
        foreach (var c in message)
        {
            if (c < 0x20 || c > 0x7E || c == '%')
            {
                plain = false;
                break;
            }
        }
        if (plain)
            return message;
        var builder = new StringBuilder(message.Length + 16);
        foreach (var b in Encoding.UTF8.GetBytes(message))
        {
            if (b >= 0x20 && b <= 0x7E && b != (byte)'%')
                builder.Append((char)b);
            else
                builder.Append('%').Append(b.ToString("X2", System.Globalization.CultureInfo.InvariantCulture));
        }
        return builder.ToString();
    }

    /// <summary>The longest delay a timer can wait (CancelAfter refuses more): about 49.7 days.</summary>
    public static readonly TimeSpan MaxTimeout = TimeSpan.FromMilliseconds(uint.MaxValue - 1.0);

    /// <summary>
    /// grpc-timeout: up to 8 digits and a unit (H, M, S, m, u, n). Null when absent, and when longer
    /// than <see cref="MaxTimeout"/> (up to 99999999 hours is valid; a deadline that far away is no
    /// deadline). A value outside that grammar is refused with INVALID_ARGUMENT.
    /// </summary>
    public static TimeSpan? ParseTimeout(string? value)
    {
        var timeout = ParseTimeoutValue(value);
        return timeout > MaxTimeout ? null : timeout;
    }

    private static TimeSpan? ParseTimeoutValue(string? value)
    {
        if (string.IsNullOrEmpty(value))
            return null;
        if (value.Length < 2 || value.Length > 9 || !long.TryParse(value.AsSpan(0, value.Length - 1), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var amount))
            throw new RequestException(GrpcStatus.InvalidArgument, $"malformed grpc-timeout '{value}'");
        return value[^1] switch
        {
            'H' => TimeSpan.FromHours(amount),
            'M' => TimeSpan.FromMinutes(amount),
            'S' => TimeSpan.FromSeconds(amount),
            'm' => TimeSpan.FromMilliseconds(amount),
            'u' => TimeSpan.FromTicks(amount * 10),
            'n' => TimeSpan.FromTicks(amount / 100),
            _ => throw new RequestException(GrpcStatus.InvalidArgument, $"malformed grpc-timeout '{value}'"),
        };
    }
}
