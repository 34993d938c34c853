using System.Buffers;
using System.Buffers.Binary;
using Grpc.AspNetCore.Server;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using System.IO.Pipelines;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace InferenceServer.Server.Grpc;

/// <summary>
/// The gRPC port on Grpc.AspNetCore: inference.v1.Inference, grpc.health.v1.Health
/// (<see cref="ServingHealth"/>) and server reflection (v1 and v1alpha), all behind
/// <see cref="GrpcCallPolicy"/>. Requests are told apart by the port they came in on, not by their
/// authority (which a proxy may rewrite): the gRPC port runs only gRPC endpoints, and the HTTP port
/// none of them.
/// </summary>
internal static class GrpcServices
{
    public static void Add(IServiceCollection services, ServerOptions options, ServedModels models, ServerState state)
    {
        services.AddSingleton(provider => new GrpcCallPolicy(options, state, provider.GetRequiredService<ILoggerFactory>()));
        services.AddSingleton(new InferenceService(options, models));
        services.AddSingleton(new ServingHealth(state));
        services.AddGrpc(grpc =>
        {
            grpc.MaxReceiveMessageSize = options.MaxMessageBytes;
            grpc.MaxSendMessageSize = options.MaxMessageBytes;
            grpc.Interceptors.Add<GrpcCallPolicy>();
            // The library's catch-all route for unknown services accepts every HTTP method, so on the
            // HTTP port it would turn routing's 405s into 404s; unknown paths are answered here instead.
            grpc.IgnoreUnknownServices = true;
            // Identity and gzip (the library adds deflate too when none is named).
            grpc.CompressionProviders = [new GzipMessages()];
        });
        services.AddGrpcReflection();
    }

    /// <summary>Maps the services, and sends every request to the side of its port. Before the HTTP endpoints' middleware.</summary>
    public static void Map(WebApplication app, ServerOptions options)
    {
        app.Use(async (context, next) =>
        {
            var endpoint = context.GetEndpoint();
            var grpc = endpoint?.Metadata.GetMetadata<GrpcPortEndpoint>() is not null;
            if (context.Connection.LocalPort != options.GrpcPort)
            {
                if (grpc)
                    context.SetEndpoint(null);
                await next(context).ConfigureAwait(false);
                return;
            }
            // Routing ignores case; gRPC method names do not.
            var method = endpoint?.Metadata.GetMetadata<GrpcMethodMetadata>()?.Method;
            if (!grpc || (method is not null && !context.Request.Path.Equals(method.FullName, StringComparison.Ordinal)))
                await NoSuchMethodAsync(context).ConfigureAwait(false);
            else if (method?.Type is MethodType.Unary or MethodType.ServerStreaming && await FirstFrameProblemAsync(context).ConfigureAwait(false) is { } problem)
                WriteStatus(context, problem);
            else
                await endpoint!.RequestDelegate!(context).ConfigureAwait(false);
        });
        app.MapGrpcService<InferenceService>().WithMetadata(GrpcPortEndpoint.Instance);
        app.MapGrpcService<ServingHealth>().WithMetadata(GrpcPortEndpoint.Instance);
        app.MapGrpcReflectionService().WithMetadata(GrpcPortEndpoint.Instance);
    }

    // Paths no service routes (the library answers unknown methods of known services itself):
    // UNIMPLEMENTED to a gRPC call, plain HTTP 415 to anything else, as the gRPC spec asks.
    private static Task NoSuchMethodAsync(HttpContext context)
    {
        if (context.Request.ContentType?.StartsWith("application/grpc", StringComparison.OrdinalIgnoreCase) != true)
        {
            context.Response.StatusCode = StatusCodes.Status415UnsupportedMediaType;
            return context.Response.WriteAsync("this port serves gRPC (application/grpc over HTTP/2)");
        }
        WriteStatus(context, new Status(StatusCode.Unimplemented, $"unknown method {context.Request.Path}"));
        return Task.CompletedTask;
    }

    /// <summary>
    /// The library answers UNKNOWN to two malformed message headers: a flag other than 0 (plain) or
    /// 1 (compressed), and a length past 2 GiB. A call that takes one message is checked for them
    /// first; the header is only looked at, and left for the library to read.
    /// </summary>
    private static async Task<Status?> FirstFrameProblemAsync(HttpContext context)
    {
        var reader = context.Request.BodyReader;
        ReadResult read;
        try
        {
            read = await reader.ReadAtLeastAsync(5, context.RequestAborted).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            return null; // the client left; the library notices too
        }
        var problem = HeaderProblem(read.Buffer);
        reader.AdvanceTo(read.Buffer.Start);
        return problem;
    }

    private static Status? HeaderProblem(ReadOnlySequence<byte> buffer)
    {
        if (buffer.Length < 5)
            return null; // the library reports a message cut short
        Span<byte> header = stackalloc byte[5];
        buffer.Slice(0, 5).CopyTo(header);
        if (header[0] > 1)
            return new Status(StatusCode.Internal, $"the message's compressed flag is {header[0]}; only 0 and 1 are defined");
        return BinaryPrimitives.ReadUInt32BigEndian(header[1..]) > int.MaxValue
            ? new Status(StatusCode.ResourceExhausted, "the message is larger than the server takes")
            : null;
    }

    // A trailers-only response: the status in the headers, no message.
    private static void WriteStatus(HttpContext context, Status status)
    {
        var response = context.Response;
        response.ContentType = "application/grpc";
        response.Headers["grpc-status"] = ((int)status.StatusCode).ToString(System.Globalization.CultureInfo.InvariantCulture);
        response.Headers["grpc-message"] = Uri.EscapeDataString(status.Detail);
    }

    /// <summary>Marks the endpoints that answer on the gRPC port only.</summary>
    private sealed class GrpcPortEndpoint
    {
        public static readonly GrpcPortEndpoint Instance = new();
    }
}
