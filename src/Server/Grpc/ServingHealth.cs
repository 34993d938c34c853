using Google.Protobuf.Reflection;
using Grpc.Core;
using Grpc.Health.V1;
using Grpc.HealthCheck;

namespace InferenceServer.Server.Grpc;

/// <summary>
/// grpc.health.v1.Health, the library's, fed from <see cref="ServerState"/>: the whole server ("")
/// and inference.v1.Inference are SERVING only while serving (NOT_SERVING while loading, draining or
/// faulted), and watches see each change as it happens. Bound like <see cref="InferenceService"/>, so
/// that a malformed request is answered as such.
/// </summary>
[BindServiceMethod(typeof(ServingHealth), nameof(BindService))]
internal sealed class ServingHealth : HealthServiceImpl
{
    public ServingHealth(ServerState state)
    {
        state.Changed += Set;
        Set(state.State);
    }

    /// <summary>The service's descriptor, where reflection looks for it (beside <see cref="BindService"/>).</summary>
    public static ServiceDescriptor Descriptor => Health.Descriptor;

    public static void BindService(ServiceBinderBase binder, Health.HealthBase service) =>
        Health.BindService(new CheckedRequestBinder(binder), service);

    private void Set(ServingState state)
    {
        var status = state == ServingState.Serving ? HealthCheckResponse.Types.ServingStatus.Serving : HealthCheckResponse.Types.ServingStatus.NotServing;
        SetStatus("", status);
        SetStatus(Protocol.Inference.Descriptor.FullName, status);
    }
}
