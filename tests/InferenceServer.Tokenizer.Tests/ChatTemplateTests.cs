using System.Text.Json;
using System.Text.Json.Nodes;
using InferenceServer.Tokenizer.ChatTemplates;

namespace InferenceServer.Tokenizer.Tests;

/// <summary>
/// Our Jinja subset against Hugging Face's JavaScript Jinja (ChatTemplateReference): the chat templates of the
/// oracle's tokenizers over several conversations, and small templates for each feature, must render the same text.
/// </summary>
public sealed class ChatTemplateTests
{
    /// <summary>The oracle's tokenizers whose tokenizer_config.json carries a chat template (llama2's has none).</summary>
    public static TheoryData<string> TemplatedTokenizers => ["qwen3", "llama3", "deepseek_v3"];

    private static readonly (string Name, ChatMessage[] Messages)[] Conversations =
    [
        ("system and user", [new("system", "You are a helpful assistant."), new("user", "Write a haiku about C#.")]),
        ("user only", [new("user", "hello")]),
        ("multi-turn", [
            new("system", "Be brief."), new("user", "What is 2+2?"), new("assistant", "4"),
            new("user", "And 3+3?"),
        ]),
        ("assistant last", [new("user", "Say hi"), new("assistant", "Hi!")]),
        ("reasoning in an earlier answer", [
            new("user", "Why?"), new("assistant", "<think>\nBecause.\n</think>\n\nIt is so."), new("user", "Sure?"),
        ]),
        ("two system messages", [new("system", "One."), new("system", "Two."), new("user", "Go")]),
        ("whitespace and unicode", [new("user", "  héllo 🙂 \n\tworld\n  "), new("assistant", "  ok  "), new("user", "\n")]),
        ("empty content", [new("user", "")]),
    ];

    [Theory]
    [MemberData(nameof(TemplatedTokenizers))]
    public void Real_chat_templates_render_as_the_reference_does(string name)
    {
        var config = ChatTemplateConfig.Load(Path.Combine(TokenizerOracle.TokenizerFolder(name), "tokenizer_config.json"));
        Assert.NotNull(config.Template);
        var cases = new List<(string, JsonObject)>();
        var ours = new List<string>();
        foreach (var (_, messages) in Conversations)
        {
            foreach (var addGenerationPrompt in new[] { true, false })
            {
                cases.Add((config.Template.Source, Context(messages, addGenerationPrompt, config.BosToken, config.EosToken)));
                ours.Add(config.Render(messages, addGenerationPrompt));
            }
        }
        var reference = ChatTemplateReference.Render(cases);
        for (var i = 0; i < cases.Count; i++)
        {
            var what = $"{name}, {Conversations[i / 2].Name}, add_generation_prompt={i % 2 == 0}";
            Assert.True(reference[i].Error is null, $"{what}: the reference failed: {reference[i].Error}");
            Assert.True(reference[i].Text == ours[i], $"{what}:\nreference: {JsonSerializer.Serialize(reference[i].Text)}\nours:      {JsonSerializer.Serialize(ours[i])}");
        }
    }

    [Fact]
    public void Bos_and_eos_tokens_are_read_as_strings_or_objects()
    {
        var deepseek = ChatTemplateConfig.Load(Path.Combine(TokenizerOracle.TokenizerFolder("deepseek_v3"), "tokenizer_config.json"));
        Assert.Equal("<｜begin▁of▁sentence｜>", deepseek.BosToken);
        Assert.Equal("<｜end▁of▁sentence｜>", deepseek.EosToken);
        var llama3 = ChatTemplateConfig.Load(Path.Combine(TokenizerOracle.TokenizerFolder("llama3"), "tokenizer_config.json"));
        Assert.Equal("<|begin_of_text|>", llama3.BosToken);
        Assert.StartsWith("<|begin_of_text|><|start_header_id|>user", llama3.Render([new("user", "x")], true), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("llama2")]
    [InlineData("minicoder")]
    public void A_config_without_a_chat_template_has_none(string name)
    {
        var config = ChatTemplateConfig.Load(Path.Combine(TokenizerOracle.TokenizerFolder(name), "tokenizer_config.json"));
        Assert.Null(config.Template);
    }

    [Fact]
    public void A_list_of_named_templates_uses_the_default_one()
    {
        using var json = JsonDocument.Parse("""
            {"chat_template": [{"name": "tool_use", "template": "tools"}, {"name": "default", "template": "{{ messages[0].content }}!"}],
             "bos_token": {"content": "<s>", "lstrip": false}}
            """);
        var config = ChatTemplateConfig.FromJson(json.RootElement);
        Assert.Equal("hi!", config.Render([new("user", "hi")], true));
        Assert.Equal("<s>", config.BosToken);
    }

    /// <summary>
    /// Each supported feature in a small template, rendered by both (the context has messages and a few values).
    /// Booleans are shown through tojson: as Python's Jinja does, we render a bare boolean as True/False, the
    /// reference as true/false. Other places where we follow Python and the reference does not, left out here:
    /// str.strip(chars), '&lt;' between strings, none in '~', and a {% break %} keeping its iteration's output.
    /// </summary>
    private static readonly string[] FeatureTemplates =
    [
        "plain text only",
        "{{ 'a' + \"b\\n\\t\\\"q\\\"\" }}|{{ 1 + 2 * 3 }}|{{ 7 // 2 }}|{{ 7 % 3 }}|{{ -4 + 1 }}|{{ 'x' ~ 5 ~ 'y' }}",
        "{{ 7 / 2 }}|{{ 2 ** 10 }}|{{ 1.5 + 1 }}|{{ 10 - 2.5 }}",
        "{% for m in messages %}{{ loop.index0 }}{{ loop.index }}{{ loop.first|tojson }}{{ loop.last|tojson }}{{ loop.length }}{{ loop.revindex }}:{{ m.role }}={{ m['content'] }};{% endfor %}",
        "{% for m in messages[1:] %}{{ m.role }},{% endfor %}|{% for m in messages[::-1] %}{{ m.role }},{% endfor %}|{% for m in messages[:-1] %}{{ m.role }},{% endfor %}",
        "{% for m in [] %}x{% else %}empty{% endfor %}|{% for m in messages if m.role == 'user' %}{{ m.content }}{% endfor %}",
        "{%- set ns = namespace(count=0, found=false) -%}\n{%- for m in messages -%}\n  {%- if m.role == 'user' -%}{%- set ns.count = ns.count + 1 -%}{%- set ns.found = true -%}{%- endif -%}\n{%- endfor -%}\n{{ ns.count }} {{ ns.found|tojson }}",
        "{% set x = 1 %}{% for m in messages %}{% set x = x + 1 %}{% endfor %}{{ x }}",
        "{% if messages|length > 2 %}long{% elif messages|length == 2 %}two{% else %}short{% endif %}",
        "{{ messages[0].content|trim|upper }}|{{ 'ABC'|lower }}|{{ '  x  '|trim }}|{{ messages|length }}|{{ 'abc'|length }}",
        "{{ undefined_thing|default('fallback') }}|{{ ''|default('empty', true) }}|{{ (none is none)|tojson }}|{{ (x is defined)|tojson }}|{{ (messages is defined)|tojson }}",
        "{{ 'a' if messages else 'b' }}|{{ 'yes' if 'sys' in messages[0].role else 'no' }}|{{ ('q' not in 'abc')|tojson }}|{{ (2 in [1, 2])|tojson }}|{{ ('k' in {'k': 1})|tojson }}",
        "{{ messages[0].content.startswith('You')|tojson }}|{{ 'a,b,c'.split(',')[1] }}|{{ '  pad  '.strip() }}|{{ '\\n\\nz'.lstrip('\\n') }}|{{ 'z  '.rstrip() }}|{{ 'Hi'.upper() }}{{ 'Hi'.lower() }}|{{ 'aaa'.replace('a', 'b') }}|{{ 'ab'.endswith('b')|tojson }}",
        "{{ 'a b  c'.split()|join('-') }}|{{ ['x', 'y']|join(', ') }}|{{ [3, 1, 2]|first }}{{ [3, 1, 2]|last }}|{{ 'a</think>b'.split('</think>')[-1] }}",
        "{{ {'a': 1, 'b': [true, none, 'é\"\\n']}|tojson }}|{{ [1, 2]|tojson }}|{{ 'x'|tojson }}|{{ {'k': {'n': 1.5}}|tojson(indent=2) }}",
        "{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}|{% for k, v in {'c': 3}|items %}{{ k }}{{ v }}{% endfor %}|{{ {'a': 1}.get('a') }}{{ {'a': 1}.get('z', 'd') }}",
        "{% macro show(m, suffix='!') %}[{{ m.role }}{{ suffix }}]{% endmacro %}{% for m in messages %}{{ show(m) }}{{ show(m, suffix='?') }}{% endfor %}",
        "{{ messages|selectattr('role', 'equalto', 'user')|map(attribute='content')|join('/') }}|{{ messages|rejectattr('role', 'equalto', 'user')|list|length }}",
        "{{ 'string' if messages[0].content is string else 'other' }}|{{ (messages is sequence)|tojson }}|{{ (messages[0] is mapping)|tojson }}|{{ (3 is number)|tojson }}|{{ (none is not none)|tojson }}|{{ (x is undefined)|tojson }}",
        "  {% if true %}\n    indented\n  {% endif %}\n{# a comment #}\ntext {{- ' trimmed ' -}} here\n{%- if true %} x {% endif -%}\n  end",
        "{% for i in range(3) %}{% if i == 1 %}{% break %}{% endif %}{{ i }}{% endfor %}|{% for i in range(1, 4) %}{% if i == 2 %}{% continue %}{% endif %}{{ i }}{% endfor %}",
        "{% set a, b = 1, 2 %}{{ a }}{{ b }}|{% set t %}block {{ a }}{% endset %}{{ t }}|{{ (1, 2)|length }}|{{ [1, 2] + [3] }}",
        "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}{% set rest = messages[1:] %}{% else %}{% set system = '' %}{% set rest = messages %}{% endif %}{{ system }}|{{ rest|length }}",
        "{{ 'abc'[0] }}{{ 'abc'[-1] }}{{ 'abcdef'[1:3] }}{{ 'abc'[::-1] }}|{{ messages[-1].role }}|{{ (messages[10] is defined)|tojson }}",
        "{{ [1 == 1.0, 'a' != 'b', 1 < 2, 2 >= 2, 2.5 > 3]|tojson }}|{{ (not false and true or false)|tojson }}|{{ none or 'x' }}{{ 0 and 'y' }}",
    ];

    [Fact]
    public void Feature_templates_render_as_the_reference_does()
    {
        var messages = new[] { new ChatMessage("system", "You are terse.  "), new("user", "hi"), new("assistant", "yo"), new("user", "bye") };
        var context = Context(messages, true, "<s>", "</s>");
        var templates = FeatureTemplates;
        var reference = ChatTemplateReference.Render(templates.Select(t => (t, context)).ToList());
        var failures = new List<string>();
        for (var i = 0; i < templates.Length; i++)
        {
            string ours;
            try
            {
                ours = ChatTemplate.Parse(templates[i]).Render(JsonDocument.Parse(context.ToJsonString()).RootElement);
            }
            catch (ChatTemplateException e)
            {
                ours = "error: " + e.Message;
            }
            var expected = reference[i].Text ?? "error: " + reference[i].Error;
            if (expected != ours)
                failures.Add($"template {i}: {JsonSerializer.Serialize(templates[i])}\n  reference: {JsonSerializer.Serialize(expected)}\n  ours:      {JsonSerializer.Serialize(ours)}");
        }
        Assert.True(failures.Count == 0, string.Join("\n", failures));
    }

    [Fact]
    public void Content_parts_render_through_a_template_that_reads_them_as_the_reference_does()
    {
        const string template = "{% for m in messages %}<{{ m.role }}>{% if m.content is string %}{{ m.content }}{% else %}{% for p in m.content %}{% if p.type == 'text' %}{{ p.text }}{% endif %}{% endfor %}{% endif %}{% endfor %}";
        var context = new JsonObject
        {
            ["messages"] = JsonNode.Parse("""[{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}, {"type": "text", "text": "b"}]}, {"role": "assistant", "content": "c"}]"""),
        };
        var reference = ChatTemplateReference.Render([(template, context)]);
        Assert.Equal(reference[0].Text, ChatTemplate.Parse(template).Render(JsonDocument.Parse(context.ToJsonString()).RootElement));
        Assert.Equal("<user>ab<assistant>c", reference[0].Text);
    }

    [Fact]
    public void Raise_exception_fails_the_render_with_the_templates_message()
    {
        var template = ChatTemplate.Parse("{% if messages[0].role != 'user' %}{{ raise_exception('Conversation roles must alternate user/assistant') }}{% endif %}ok");
        var error = Assert.Throws<ChatTemplateException>(() => template.Render(new Dictionary<string, object?>
        {
            ["messages"] = new List<object?> { new Dictionary<string, object?> { ["role"] = "assistant", ["content"] = "x" } },
        }));
        Assert.Equal("Conversation roles must alternate user/assistant", error.Message);
        Assert.True(error.RaisedByTemplate);
    }

    [Theory]
    [InlineData("{% if x %}never closed", "line 1: '{% if %}' is never closed with '{% endif %}'")]
    [InlineData("a\n{% for x in %}{% endfor %}", "line 2: expected an expression, got the end of the tag")]
    [InlineData("{{ x ", "line 1: a tag opened with '{{' is never closed with '}}'")]
    [InlineData("{% endfor %}", "line 1: unexpected '{% endfor %}' with no block to close")]
    [InlineData("{% include 'x' %}", "line 1: unknown statement 'include' (this renderer supports if, for, set, macro, break, continue)")]
    public void Syntax_errors_name_the_line(string source, string message)
    {
        var error = Assert.Throws<ChatTemplateException>(() => ChatTemplate.Parse(source));
        Assert.Equal(message, error.Message);
    }

    [Theory]
    [InlineData("{{ x.y }}", "line 1: cannot read 'y' of an undefined value")]
    [InlineData("\n{{ 'a' + 1 }}", "line 2: cannot apply '+' to a string and a integer")]
    [InlineData("{{ x|nosuchfilter }}", "line 1: unknown filter 'nosuchfilter'")]
    public void Render_errors_name_the_line(string source, string message)
    {
        var error = Assert.Throws<ChatTemplateException>(() => ChatTemplate.Parse(source).Render(new Dictionary<string, object?>()));
        Assert.Equal(message, error.Message);
    }

    private static JsonObject Context(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt, string? bos, string? eos)
    {
        var list = new JsonArray();
        foreach (var m in messages)
            list.Add(new JsonObject { ["role"] = m.Role, ["content"] = m.Content });
        return new JsonObject
        {
            ["messages"] = list,
            ["add_generation_prompt"] = addGenerationPrompt,
            ["bos_token"] = bos ?? "",
            ["eos_token"] = eos ?? "",
        };
    }
}
