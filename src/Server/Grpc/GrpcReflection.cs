using Google.Protobuf.Reflection;
using InferenceServer.Protocol.Reflection;

namespace InferenceServer.Server.Grpc;

/// <summary>
/// Server reflection (grpc.reflection.v1 and v1alpha), so generic tools (grpcurl, Postman,
/// grpc_cli) can list the services and fetch their .proto descriptors without the files.
/// </summary>
internal sealed class GrpcReflection
{
    private static readonly FileDescriptor[] Files =
    [
        Protocol.InferenceReflection.Descriptor,
        Protocol.Health.HealthReflection.Descriptor,
        ReflectionReflection.Descriptor,
    ];

    private readonly string[] _services;

    public GrpcReflection(IEnumerable<string> methodPaths)
    {
        // "/package.Service/Method" -> "package.Service", plus the reflection services themselves.
        _services = methodPaths.Select(p => p.Split('/')[1])
            .Concat(["grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"])
            .Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToArray();
    }

    public static IEnumerable<(string Path, Func<CallContext, Task> Handler)> Methods(GrpcReflection reflection)
    {
        yield return ("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", reflection.RunAsync);
        yield return ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", reflection.RunAsync);
    }

    // Bidirectional: one response per request until the client closes its side.
    private async Task RunAsync(CallContext call)
    {
        await call.StartAsync().ConfigureAwait(false);
        while (await call.ReadNextAsync(ServerReflectionRequest.Parser).ConfigureAwait(false) is { } request)
            await call.WriteAsync(Answer(request)).ConfigureAwait(false);
    }

    private ServerReflectionResponse Answer(ServerReflectionRequest request)
    {
        var response = new ServerReflectionResponse { ValidHost = request.Host, OriginalRequest = request };
        switch (request.MessageRequestCase)
        {
            case ServerReflectionRequest.MessageRequestOneofCase.ListServices:
                var list = new ListServiceResponse();
                list.Service.Add(_services.Select(s => new ServiceResponse { Name = s }));
                response.ListServicesResponse = list;
                break;
            case ServerReflectionRequest.MessageRequestOneofCase.FileByFilename:
                Describe(response, Files.FirstOrDefault(f => f.Name == request.FileByFilename), $"file '{request.FileByFilename}'");
                break;
            case ServerReflectionRequest.MessageRequestOneofCase.FileContainingSymbol:
                Describe(response, Files.FirstOrDefault(f => Defines(f, request.FileContainingSymbol)), $"symbol '{request.FileContainingSymbol}'");
                break;
            default:
                response.ErrorResponse = new ErrorResponse { ErrorCode = (int)GrpcStatus.Unimplemented, ErrorMessage = "extensions are not used by these services" };
                break;
        }
        return response;
    }

    private static void Describe(ServerReflectionResponse response, FileDescriptor? file, string what)
    {
        if (file is null)
        {
            response.ErrorResponse = new ErrorResponse { ErrorCode = (int)GrpcStatus.NotFound, ErrorMessage = $"{what} not found" };
            return;
        }
        var files = new FileDescriptorResponse();
        foreach (var f in file.Dependencies.Prepend(file))
            files.FileDescriptorProto.Add(f.SerializedData);
        response.FileDescriptorResponse = files;
    }

    private static bool Defines(FileDescriptor file, string symbol) =>
        file.Services.Any(s => s.FullName == symbol || s.Methods.Any(m => $"{s.FullName}.{m.Name}" == symbol))
        || file.MessageTypes.Any(m => Contains(m, symbol))
        || file.EnumTypes.Any(e => e.FullName == symbol);

    private static bool Contains(MessageDescriptor message, string symbol) =>
        message.FullName == symbol
        || message.NestedTypes.Any(n => Contains(n, symbol))
        || message.EnumTypes.Any(e => e.FullName == symbol);
}
