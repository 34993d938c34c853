using System.Buffers;
using System.Text.Unicode;
using Google.Protobuf;
using Google.Protobuf.Reflection;
using Grpc.Core;

namespace InferenceServer.Server.Grpc;

/// <summary>
/// Binds a generated service with checks around each method's request parser: a request whose text
/// is not UTF-8 ends as INVALID_ARGUMENT naming the field, before it is parsed, and bytes that are
/// not the request message at all as INTERNAL saying so (as gRPC's other servers answer), where the
/// library would answer UNKNOWN.
/// </summary>
internal sealed class CheckedRequestBinder(ServiceBinderBase inner) : ServiceBinderBase
{
    public override void AddMethod<TRequest, TResponse>(Method<TRequest, TResponse> method, UnaryServerMethod<TRequest, TResponse>? handler) =>
        inner.AddMethod(Checked(method), handler);

    public override void AddMethod<TRequest, TResponse>(Method<TRequest, TResponse> method, ServerStreamingServerMethod<TRequest, TResponse>? handler) =>
        inner.AddMethod(Checked(method), handler);

    public override void AddMethod<TRequest, TResponse>(Method<TRequest, TResponse> method, ClientStreamingServerMethod<TRequest, TResponse>? handler) =>
        inner.AddMethod(Checked(method), handler);

    public override void AddMethod<TRequest, TResponse>(Method<TRequest, TResponse> method, DuplexStreamingServerMethod<TRequest, TResponse>? handler) =>
        inner.AddMethod(Checked(method), handler);

    private static Method<TRequest, TResponse> Checked<TRequest, TResponse>(Method<TRequest, TResponse> method)
        where TRequest : class
        where TResponse : class
    {
        if (Activator.CreateInstance<TRequest>() is not IMessage { Descriptor: var descriptor })
            return method;
        var parse = method.RequestMarshaller.ContextualDeserializer;
        var marshaller = Marshallers.Create(method.RequestMarshaller.ContextualSerializer, context =>
        {
            if (Utf8Fields.FindInvalid(descriptor, context.PayloadAsReadOnlySequence()) is { } field)
                throw new RpcException(new Status(StatusCode.InvalidArgument, $"{field} is not valid UTF-8"));
            try
            {
                return parse(context);
            }
            catch (InvalidProtocolBufferException e)
            {
                throw new RpcException(new Status(StatusCode.Internal, $"the request is not a valid {descriptor.FullName}: {e.Message}"));
            }
        });
        return new Method<TRequest, TResponse>(method.Type, method.ServiceName, method.Name, marshaller, method.ResponseMarshaller);
    }
}

/// <summary>
/// Checks that a message's string fields (nested messages included) hold UTF-8, as protobuf requires.
/// Google.Protobuf's C# parser does not refuse other bytes but turns them into U+FFFD, so a prompt
/// would be silently changed; this walks the wire format first, without allocating, to refuse the
/// call with the field's name.
/// </summary>
internal static class Utf8Fields
{
    /// <summary>The path of the first string field that is not UTF-8 ("prompt", "infill.prefix"), else null.</summary>
    public static string? FindInvalid(MessageDescriptor descriptor, in ReadOnlySequence<byte> message)
    {
        if (message.IsSingleSegment)
            return Find(descriptor, message.FirstSpan);
        var copy = ArrayPool<byte>.Shared.Rent((int)message.Length);
        try
        {
            message.CopyTo(copy);
            return Find(descriptor, copy.AsSpan(0, (int)message.Length));
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(copy);
        }
    }

    // Malformed wire data is left to the parser, which reports it: this returns null for it.
    private static string? Find(MessageDescriptor descriptor, ReadOnlySpan<byte> message)
    {
        while (!message.IsEmpty)
        {
            if (!TryReadVarint(ref message, out var tag))
                return null;
            switch ((WireFormat.WireType)(tag & 7))
            {
                case WireFormat.WireType.Varint:
                    if (!TryReadVarint(ref message, out _))
                        return null;
                    break;
                case WireFormat.WireType.Fixed64 when message.Length >= 8:
                    message = message[8..];
                    break;
                case WireFormat.WireType.Fixed32 when message.Length >= 4:
                    message = message[4..];
                    break;
                case WireFormat.WireType.LengthDelimited:
                    if (!TryReadVarint(ref message, out var length) || length > (ulong)message.Length)
                        return null;
                    var value = message[..(int)length];
                    message = message[(int)length..];
                    var field = descriptor.FindFieldByNumber((int)(tag >> 3));
                    if (field?.FieldType == FieldType.String && !Utf8.IsValid(value))
                        return field.Name;
                    if (field?.FieldType == FieldType.Message && Find(field.MessageType, value) is { } inner)
                        return field.Name + "." + inner;
                    break;
                default:
                    return null;
            }
        }
        return null;
    }

    private static bool TryReadVarint(ref ReadOnlySpan<byte> span, out ulong value)
    {
        value = 0;
        for (var i = 0; i < 10 && i < span.Length; i++)
        {
            value |= (ulong)(span[i] & 0x7F) << (7 * i);
            if (span[i] < 0x80)
            {
                span = span[(i + 1)..];
                return true;
            }
        }
        return false;
    }
}
