namespace InferenceServer.Tokenizer.ChatTemplates;

// The parsed template: statements (Node) and expressions (Expr). Line numbers are for error messages.

internal abstract record Node(int Line)
{
    public sealed record Text(string Value, int Line) : Node(Line);
    public sealed record Output(Expr Value, int Line) : Node(Line);
    public sealed record If(IReadOnlyList<(Expr Condition, IReadOnlyList<Node> Body)> Branches, IReadOnlyList<Node> Else, int Line) : Node(Line);

    /// <summary>{% for a, b in xs if cond %} ... {% else %} ... {% endfor %}</summary>
    public sealed record For(IReadOnlyList<string> Targets, Expr Iterable, Expr? Filter, IReadOnlyList<Node> Body, IReadOnlyList<Node> Else, int Line) : Node(Line);

    /// <summary>{% set x = v %}, {% set a, b = v %}, {% set ns.x = v %} (Attribute), or {% set x %}...{% endset %} (Body).</summary>
    public sealed record Set(IReadOnlyList<string> Targets, string? Attribute, Expr? Value, IReadOnlyList<Node>? Body, int Line) : Node(Line);

    public sealed record Macro(string Name, IReadOnlyList<(string Name, Expr? Default)> Parameters, IReadOnlyList<Node> Body, int Line) : Node(Line);
    public sealed record Break(int Line) : Node(Line);
    public sealed record Continue(int Line) : Node(Line);
}

internal abstract record Expr(int Line)
{
    public sealed record Literal(object? Value, int Line) : Expr(Line);
    public sealed record Variable(string Id, int Line) : Expr(Line);
    public sealed record ListLiteral(IReadOnlyList<Expr> Items, int Line) : Expr(Line);
    public sealed record DictLiteral(IReadOnlyList<(Expr Key, Expr Value)> Items, int Line) : Expr(Line);
    public sealed record Attribute(Expr Target, string Name, int Line) : Expr(Line);
    public sealed record Item(Expr Target, Expr Key, int Line) : Expr(Line);
    public sealed record Slice(Expr Target, Expr? Start, Expr? Stop, Expr? Step, int Line) : Expr(Line);
    public sealed record Call(Expr Callee, IReadOnlyList<Expr> Args, IReadOnlyList<(string Name, Expr Value)> Kwargs, int Line) : Expr(Line);
    public sealed record Filter(Expr Value, string Name, IReadOnlyList<Expr> Args, IReadOnlyList<(string Name, Expr Value)> Kwargs, int Line) : Expr(Line);
    public sealed record Test(Expr Value, string Name, IReadOnlyList<Expr> Args, bool Negated, int Line) : Expr(Line);
    public sealed record Unary(string Op, Expr Operand, int Line) : Expr(Line);
    public sealed record Binary(string Op, Expr Left, Expr Right, int Line) : Expr(Line);
    public sealed record Conditional(Expr Condition, Expr Then, Expr? Else, int Line) : Expr(Line);
}
