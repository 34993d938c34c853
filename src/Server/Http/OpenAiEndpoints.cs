using Microsoft.AspNetCore.Builder;

namespace InferenceServer.Server.Http;

/// <summary>OpenAI-style HTTP: /v1/completions, /v1/models, llama.cpp's /infill, /health.</summary>
public static class OpenAiEndpoints
{
    public static void Map(WebApplication app, ServerOptions options, ServedModel model, ServerState state)
    {
    }
}
