using System.Text.Json;

namespace InferenceServer.Tokenizer.ChatTemplates;

/// <summary>
/// A Hugging Face chat template (tokenizer_config.json's chat_template): the Jinja2 subset that real chat
/// templates use, parsed once and rendered per conversation, with trim_blocks and lstrip_blocks on as
/// transformers renders them. Rendered text holds the model's control tokens as text: tokenize it with
/// special tokens parsed and without the post-processor (add_special_tokens=False, as
/// apply_chat_template(tokenize=True) does), since the template writes any BOS itself.
/// <para>
/// Supported: text, {{ expr }}, {% if/elif/else %}, {% for a[, b] in xs [if c] %} with loop.* and
/// {% else %}, {% set %} (names, tuples, namespace attributes, blocks), {% macro %}, {% break %},
/// {% continue %}, {# comments #}, whitespace control with "-"; literals, attribute, item and slice access,
/// calls, filters (<see cref="TemplateRenderer"/>'s ApplyFilter), tests, Python string and dict methods,
/// and the operators + - * / // % ** ~ == != &lt; &gt; &lt;= &gt;= and or not in "not in" "x if c else y".
/// Globals: raise_exception(message), namespace(...), range(...). Values print as Python's str() does
/// (True, None, 1.0), as in transformers.
/// </para>
/// <para>
/// Why our own interpreter: the package feed has no Jinja engine. Fluid implements Liquid and Scriban its
/// own language plus a Liquid mode; neither has a Jinja mode, and Liquid differs where chat templates
/// depend on it (no namespace() or {% set ns.x %}, no Python methods such as .strip() or .split(), no
/// "is defined" tests, different whitespace control and operators).
/// </para>
/// </summary>
public sealed class ChatTemplate
{
    private readonly IReadOnlyList<Node> _nodes;

    private ChatTemplate(string source, IReadOnlyList<Node> nodes)
    {
        Source = source;
        _nodes = nodes;
    }

    public string Source { get; }

    /// <summary>Parses a template; a syntax error or an unsupported statement is a <see cref="ChatTemplateException"/> naming the line.</summary>
    public static ChatTemplate Parse(string source)
    {
        ArgumentNullException.ThrowIfNull(source);
        return new ChatTemplate(source, TemplateParser.Parse(source));
    }

    /// <summary>Renders with the variables of a JSON object (messages, add_generation_prompt, bos_token, ...).</summary>
    public string Render(JsonElement context)
    {
        if (context.ValueKind != JsonValueKind.Object)
            throw new ArgumentException("the context must be a JSON object", nameof(context));
        var variables = (Dictionary<string, object?>)TemplateValues.FromJson(context)!;
        return TemplateRenderer.Render(_nodes, variables);
    }

    /// <summary>
    /// Renders with the given variables, whose values are null, bool, long, double, string,
    /// List&lt;object?&gt; or Dictionary&lt;string, object?&gt;. A failure, including the template's own
    /// raise_exception, is a <see cref="ChatTemplateException"/>.
    /// </summary>
    public string Render(IReadOnlyDictionary<string, object?> context)
    {
        ArgumentNullException.ThrowIfNull(context);
        return TemplateRenderer.Render(_nodes, context);
    }
}

/// <summary>A message as a chat template sees it: a role and its text.</summary>
public sealed record ChatMessage(string Role, string Content);

/// <summary>
/// What tokenizer_config.json says about chat: the template (a string, or a list of {name, template} of
/// which "default" is used) and the bos_token and eos_token it may write (strings or {content: ...}).
/// </summary>
public sealed class ChatTemplateConfig
{
    public static ChatTemplateConfig None { get; } = new(null, null, null);

    private ChatTemplateConfig(ChatTemplate? template, string? bosToken, string? eosToken)
    {
        Template = template;
        BosToken = bosToken;
        EosToken = eosToken;
    }

    /// <summary>Null when the model has no chat template.</summary>
    public ChatTemplate? Template { get; }

    public string? BosToken { get; }
    public string? EosToken { get; }

    /// <summary>Reads tokenizer_config.json; a missing file is a model without a chat template. A template that does not parse throws.</summary>
    public static ChatTemplateConfig Load(string tokenizerConfigPath)
    {
        if (!File.Exists(tokenizerConfigPath))
            return None;
        using var document = JsonDocument.Parse(File.ReadAllText(tokenizerConfigPath));
        return FromJson(document.RootElement, tokenizerConfigPath);
    }

    public static ChatTemplateConfig FromJson(JsonElement config, string source = "tokenizer_config.json")
    {
        if (config.ValueKind != JsonValueKind.Object)
            throw new ChatTemplateException($"{source}: expected a JSON object");
        string? templateText = null;
        if (config.TryGetProperty("chat_template", out var template))
        {
            templateText = template.ValueKind switch
            {
                JsonValueKind.String => template.GetString(),
                JsonValueKind.Array => template.EnumerateArray()
                    .Where(t => t.ValueKind == JsonValueKind.Object && t.TryGetProperty("name", out var name) && name.ValueKind == JsonValueKind.String && name.GetString() == "default")
                    .Select(t => t.TryGetProperty("template", out var text) && text.ValueKind == JsonValueKind.String ? text.GetString() : null)
                    .FirstOrDefault(),
                _ => null,
            };
        }
        ChatTemplate? parsed = null;
        if (!string.IsNullOrEmpty(templateText))
        {
            try
            {
                parsed = ChatTemplate.Parse(templateText);
            }
            catch (ChatTemplateException e)
            {
                throw new ChatTemplateException($"{source}: the chat template does not parse: {e.Message}", e);
            }
        }
        return new ChatTemplateConfig(parsed, TokenText(config, "bos_token"), TokenText(config, "eos_token"));
    }

    private static string? TokenText(JsonElement config, string name)
    {
        if (!config.TryGetProperty(name, out var token))
            return null;
        if (token.ValueKind == JsonValueKind.String)
            return token.GetString();
        if (token.ValueKind == JsonValueKind.Object && token.TryGetProperty("content", out var content) && content.ValueKind == JsonValueKind.String)
            return content.GetString();
        return null;
    }

    /// <summary>
    /// The prompt for a conversation, as transformers' apply_chat_template(messages, add_generation_prompt)
    /// renders it: the variables messages, add_generation_prompt, bos_token and eos_token (the last two
    /// empty when the config has none).
    /// </summary>
    public string Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var template = Template ?? throw new InvalidOperationException("this model has no chat template");
        var list = messages.Select(m => (object?)new Dictionary<string, object?>(StringComparer.Ordinal)
        {
            ["role"] = m.Role,
            ["content"] = m.Content,
        }).ToList();
        return template.Render(new Dictionary<string, object?>(StringComparer.Ordinal)
        {
            ["messages"] = list,
            ["add_generation_prompt"] = addGenerationPrompt,
            ["bos_token"] = BosToken ?? "",
            ["eos_token"] = EosToken ?? "",
        });
    }
}
