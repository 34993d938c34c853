using System.Text.Json;
using System.Text.Json.Nodes;
using InferenceServer.Tests;

namespace InferenceServer.Tokenizer.Tests;

/// <summary>What the reference renderer made of one case: the text, or the error it raised.</summary>
public sealed record ReferenceRendering(string? Text, string? Error);

/// <summary>
/// Hugging Face's JavaScript Jinja (npm @huggingface/jinja, pinned) through tests/fixtures/chat-template/reference.sh,
/// which installs it once into the cache folder and renders a batch of (template, context) cases.
/// </summary>
public static class ChatTemplateReference
{
    private static readonly TimeSpan ScriptTimeout = TimeSpan.FromMinutes(5);

    public static IReadOnlyList<ReferenceRendering> Render(IReadOnlyList<(string Template, JsonObject Context)> cases)
    {
        var input = new JsonArray();
        foreach (var (template, context) in cases)
            input.Add(new JsonObject { ["template"] = template, ["context"] = context.DeepClone() });
        var path = Path.Combine(Path.GetTempPath(), $"chat-template-cases-{Guid.NewGuid():N}.json");
        File.WriteAllText(path, input.ToJsonString());
        try
        {
            var script = Path.Combine(TestPaths.RepoRoot, "tests", "fixtures", "chat-template", "reference.sh");
            using var results = JsonDocument.Parse(FixtureScripts.Run(script, [path], ScriptTimeout));
            return results.RootElement.EnumerateArray()
                .Select(r => new ReferenceRendering(
                    r.TryGetProperty("text", out var text) ? text.GetString() : null,
                    r.TryGetProperty("error", out var error) ? error.GetString() : null))
                .ToList();
        }
        finally
        {
            File.Delete(path);
        }
    }
}
