using System.Globalization;

namespace InferenceServer.Tokenizer.ChatTemplates;

/// <summary>Builds the syntax tree from the lexer's parts: statements by recursive descent over the parts,
/// expressions by precedence climbing over each tag's tokens, with Jinja's precedence (lowest first):
/// x if c else y; or; and; not; comparisons and in/not in; + -; ~; * / // %; **; unary -; then
/// postfix .attr, [item], [a:b:c], (call), | filter and "is" test.</summary>
internal sealed class TemplateParser
{
    private readonly List<TemplatePart> _parts;
    private int _index;

    // Statement keywords that end or split a block, so a body stops there.
    private static readonly HashSet<string> BlockEnds =
        new(["elif", "else", "endif", "endfor", "endmacro", "endset", "endcall", "endfilter"], StringComparer.Ordinal);

    private TemplateParser(List<TemplatePart> parts) => _parts = parts;

    public static IReadOnlyList<Node> Parse(string source)
    {
        var parser = new TemplateParser(TemplateLexer.Split(source));
        var body = parser.ParseBody(out var end);
        if (end is not null)
            throw Error(end.Line, $"unexpected '{{% {end.Tokens[0].Text} %}}' with no block to close");
        return body;
    }

    private static ChatTemplateException Error(int line, string message) => new($"line {line}: {message}");

    /// <summary>Nodes up to the end of the parts or a block keyword (returned in <paramref name="end"/>, consumed).</summary>
    private List<Node> ParseBody(out TemplatePart.Statement? end)
    {
        var nodes = new List<Node>();
        while (_index < _parts.Count)
        {
            var part = _parts[_index++];
            switch (part)
            {
                case TemplatePart.Text text:
                    nodes.Add(new Node.Text(text.Value, text.Line));
                    break;
                case TemplatePart.Output output:
                    var tokens = new TokenReader(output.Tokens);
                    nodes.Add(new Node.Output(new ExpressionParser(tokens).ParseExpression(), output.Line));
                    tokens.ExpectEnd();
                    break;
                case TemplatePart.Statement statement:
                    var keyword = statement.Tokens[0];
                    if (keyword.Kind == TokenKind.Name && BlockEnds.Contains(keyword.Text))
                    {
                        end = statement;
                        return nodes;
                    }
                    nodes.Add(ParseStatement(statement));
                    break;
            }
        }
        end = null;
        return nodes;
    }

    private Node ParseStatement(TemplatePart.Statement statement)
    {
        var tokens = new TokenReader(statement.Tokens);
        var keyword = tokens.Next();
        if (keyword.Kind != TokenKind.Name)
            throw Error(keyword.Line, $"expected a statement keyword, got '{keyword.Text}'");
        var line = statement.Line;
        switch (keyword.Text)
        {
            case "if":
                return ParseIf(tokens, line);
            case "for":
                return ParseFor(tokens, line);
            case "set":
                return ParseSet(tokens, line);
            case "macro":
                return ParseMacro(tokens, line);
            case "break":
                tokens.ExpectEnd();
                return new Node.Break(line);
            case "continue":
                tokens.ExpectEnd();
                return new Node.Continue(line);
            default:
                throw Error(line, $"unknown statement '{keyword.Text}' (this renderer supports if, for, set, macro, break, continue)");
        }
    }

    private Node.If ParseIf(TokenReader tokens, int line)
    {
        var branches = new List<(Expr, IReadOnlyList<Node>)>();
        var condition = new ExpressionParser(tokens).ParseExpression();
        tokens.ExpectEnd();
        while (true)
        {
            var body = ParseBody(out var end);
            branches.Add((condition, body));
            var word = end?.Tokens[0].Text;
            if (word == "elif")
            {
                var reader = new TokenReader(end!.Tokens);
                reader.Next();
                condition = new ExpressionParser(reader).ParseExpression();
                reader.ExpectEnd();
                continue;
            }
            if (word == "else")
            {
                new TokenReader(end!.Tokens).Skip(1).ExpectEnd();
                var elseBody = ParseBody(out var endIf);
                Expect(endIf, "endif", "if", line);
                return new Node.If(branches, elseBody, line);
            }
            Expect(end, "endif", "if", line);
            return new Node.If(branches, [], line);
        }
    }

    private Node.For ParseFor(TokenReader tokens, int line)
    {
        var targets = new List<string> { tokens.ExpectName() };
        while (tokens.TryOperator(","))
            targets.Add(tokens.ExpectName());
        tokens.ExpectKeyword("in");
        var expressions = new ExpressionParser(tokens);
        // The iterable stops before a trailing "if" (a loop filter), so no conditional expression here.
        var iterable = expressions.ParseOr();
        var filter = tokens.TryKeyword("if") ? expressions.ParseExpression() : null;
        tokens.ExpectEnd();
        var body = ParseBody(out var end);
        IReadOnlyList<Node> elseBody = [];
        if (end?.Tokens[0].Text == "else")
        {
            elseBody = ParseBody(out end);
        }
        Expect(end, "endfor", "for", line);
        return new Node.For(targets, iterable, filter, body, elseBody, line);
    }

    private Node.Set ParseSet(TokenReader tokens, int line)
    {
        var targets = new List<string> { tokens.ExpectName() };
        string? attribute = null;
        if (tokens.TryOperator("."))
            attribute = tokens.ExpectName();
        else
        {
            while (tokens.TryOperator(","))
                targets.Add(tokens.ExpectName());
        }
        if (!tokens.TryOperator("="))
        {
            tokens.ExpectEnd();
            if (attribute is not null || targets.Count > 1)
                throw Error(line, "a block {% set %} takes one plain name");
            var body = ParseBody(out var end);
            Expect(end, "endset", "set", line);
            return new Node.Set(targets, null, null, body, line);
        }
        var value = new ExpressionParser(tokens).ParseTuple();
        tokens.ExpectEnd();
        return new Node.Set(targets, attribute, value, null, line);
    }

    private Node.Macro ParseMacro(TokenReader tokens, int line)
    {
        var name = tokens.ExpectName();
        tokens.ExpectOperator("(");
        var parameters = new List<(string, Expr?)>();
        while (!tokens.TryOperator(")"))
        {
            if (parameters.Count > 0)
                tokens.ExpectOperator(",");
            var parameter = tokens.ExpectName();
            parameters.Add((parameter, tokens.TryOperator("=") ? new ExpressionParser(tokens).ParseExpression() : null));
        }
        tokens.ExpectEnd();
        var body = ParseBody(out var end);
        Expect(end, "endmacro", "macro", line);
        return new Node.Macro(name, parameters, body, line);
    }

    private static void Expect(TemplatePart.Statement? end, string keyword, string opener, int line)
    {
        if (end is null)
            throw Error(line, $"'{{% {opener} %}}' is never closed with '{{% {keyword} %}}'");
        if (end.Tokens[0].Text != keyword)
            throw Error(end.Line, $"expected '{{% {keyword} %}}' to close the '{{% {opener} %}}' of line {line}, got '{{% {end.Tokens[0].Text} %}}'");
        new TokenReader(end.Tokens).Skip(1).ExpectEnd();
    }
}

/// <summary>A cursor over one tag's tokens (the list ends with an End token).</summary>
internal sealed class TokenReader(List<Token> tokens)
{
    private int _pos;

    public Token Peek(int ahead = 0) => tokens[Math.Min(_pos + ahead, tokens.Count - 1)];

    public Token Next() => tokens[Math.Min(_pos++, tokens.Count - 1)];

    public TokenReader Skip(int count)
    {
        _pos += count;
        return this;
    }

    public bool IsOperator(string op, int ahead = 0) => Peek(ahead) is { Kind: TokenKind.Operator } t && t.Text == op;

    public bool IsKeyword(string word, int ahead = 0) => Peek(ahead) is { Kind: TokenKind.Name } t && t.Text == word;

    public bool TryOperator(string op)
    {
        if (!IsOperator(op))
            return false;
        _pos++;
        return true;
    }

    public bool TryKeyword(string word)
    {
        if (!IsKeyword(word))
            return false;
        _pos++;
        return true;
    }

    public void ExpectOperator(string op)
    {
        if (!TryOperator(op))
            throw Unexpected($"'{op}'");
    }

    public void ExpectKeyword(string word)
    {
        if (!TryKeyword(word))
            throw Unexpected($"'{word}'");
    }

    public string ExpectName()
    {
        if (Peek().Kind != TokenKind.Name)
            throw Unexpected("a name");
        return Next().Text;
    }

    public void ExpectEnd()
    {
        if (Peek().Kind != TokenKind.End)
            throw Unexpected("the end of the tag");
    }

    public ChatTemplateException Unexpected(string expected)
    {
        var t = Peek();
        var got = t.Kind switch { TokenKind.End => "the end of the tag", TokenKind.String => "a string", _ => $"'{t.Text}'" };
        return new ChatTemplateException($"line {t.Line}: expected {expected}, got {got}");
    }
}

internal sealed class ExpressionParser(TokenReader tokens)
{
    private static readonly HashSet<string> Comparisons = new(["==", "!=", "<", ">", "<=", ">="], StringComparer.Ordinal);

    /// <summary>An expression, or several separated by commas (a tuple, as a list): the right side of a set.</summary>
    public Expr ParseTuple()
    {
        var first = ParseExpression();
        if (!tokens.IsOperator(","))
            return first;
        var items = new List<Expr> { first };
        while (tokens.TryOperator(","))
            items.Add(ParseExpression());
        return new Expr.ListLiteral(items, first.Line);
    }

    public Expr ParseExpression()
    {
        var value = ParseOr();
        if (!tokens.IsKeyword("if"))
            return value;
        var line = tokens.Next().Line;
        var condition = ParseOr();
        var otherwise = tokens.TryKeyword("else") ? ParseExpression() : null;
        return new Expr.Conditional(condition, value, otherwise, line);
    }

    public Expr ParseOr()
    {
        var left = ParseAnd();
        while (tokens.IsKeyword("or"))
            left = new Expr.Binary("or", left, Skip(ParseAnd), left.Line);
        return left;
    }

    private Expr ParseAnd()
    {
        var left = ParseNot();
        while (tokens.IsKeyword("and"))
            left = new Expr.Binary("and", left, Skip(ParseNot), left.Line);
        return left;
    }

    private Expr ParseNot()
    {
        if (tokens.IsKeyword("not"))
        {
            var line = tokens.Next().Line;
            return new Expr.Unary("not", ParseNot(), line);
        }
        return ParseComparison();
    }

    private Expr ParseComparison()
    {
        var left = ParseAdditive();
        while (true)
        {
            var t = tokens.Peek();
            if (t.Kind == TokenKind.Operator && Comparisons.Contains(t.Text))
                left = new Expr.Binary(t.Text, left, Skip(ParseAdditive), t.Line);
            else if (tokens.IsKeyword("in"))
                left = new Expr.Binary("in", left, Skip(ParseAdditive), t.Line);
            else if (tokens.IsKeyword("not") && tokens.IsKeyword("in", 1))
            {
                tokens.Next();
                left = new Expr.Binary("not in", left, Skip(ParseAdditive), t.Line);
            }
            else
                return left;
        }
    }

    private Expr ParseAdditive()
    {
        var left = ParseConcat();
        while (tokens.IsOperator("+") || tokens.IsOperator("-"))
        {
            var op = tokens.Peek().Text;
            left = new Expr.Binary(op, left, Skip(ParseConcat), left.Line);
        }
        return left;
    }

    private Expr ParseConcat()
    {
        var left = ParseMultiplicative();
        while (tokens.IsOperator("~"))
            left = new Expr.Binary("~", left, Skip(ParseMultiplicative), left.Line);
        return left;
    }

    private Expr ParseMultiplicative()
    {
        var left = ParsePower();
        while (tokens.IsOperator("*") || tokens.IsOperator("/") || tokens.IsOperator("//") || tokens.IsOperator("%"))
        {
            var op = tokens.Peek().Text;
            left = new Expr.Binary(op, left, Skip(ParsePower), left.Line);
        }
        return left;
    }

    private Expr ParsePower()
    {
        var left = ParseUnary();
        while (tokens.IsOperator("**"))
            left = new Expr.Binary("**", left, Skip(ParseUnary), left.Line);
        return left;
    }

    private Expr ParseUnary()
    {
        if (tokens.IsOperator("-") || tokens.IsOperator("+"))
        {
            var t = tokens.Next();
            return new Expr.Unary(t.Text, ParseUnary(), t.Line);
        }
        return ParsePostfix(ParsePrimary());
    }

    private Expr Skip(Func<Expr> parse)
    {
        tokens.Next();
        return parse();
    }

    private Expr ParsePrimary()
    {
        var t = tokens.Next();
        switch (t.Kind)
        {
            case TokenKind.String:
                // Adjacent strings join, as in Python.
                var text = t.Text;
                while (tokens.Peek().Kind == TokenKind.String)
                    text += tokens.Next().Text;
                return new Expr.Literal(text, t.Line);
            case TokenKind.Integer:
                return new Expr.Literal(long.Parse(t.Text, CultureInfo.InvariantCulture), t.Line);
            case TokenKind.Float:
                return new Expr.Literal(double.Parse(t.Text, CultureInfo.InvariantCulture), t.Line);
            case TokenKind.Name:
                return t.Text switch
                {
                    "true" or "True" => new Expr.Literal(true, t.Line),
                    "false" or "False" => new Expr.Literal(false, t.Line),
                    "none" or "None" => new Expr.Literal(null, t.Line),
                    _ => new Expr.Variable(t.Text, t.Line),
                };
            case TokenKind.Operator when t.Text == "(":
                var inner = ParseTuple();
                tokens.ExpectOperator(")");
                return inner;
            case TokenKind.Operator when t.Text == "[":
                var items = new List<Expr>();
                while (!tokens.TryOperator("]"))
                {
                    if (items.Count > 0)
                    {
                        tokens.ExpectOperator(",");
                        if (tokens.TryOperator("]"))
                            break;
                    }
                    items.Add(ParseExpression());
                }
                return new Expr.ListLiteral(items, t.Line);
            case TokenKind.Operator when t.Text == "{":
                var pairs = new List<(Expr, Expr)>();
                while (!tokens.TryOperator("}"))
                {
                    if (pairs.Count > 0)
                    {
                        tokens.ExpectOperator(",");
                        if (tokens.TryOperator("}"))
                            break;
                    }
                    var key = ParseExpression();
                    tokens.ExpectOperator(":");
                    pairs.Add((key, ParseExpression()));
                }
                return new Expr.DictLiteral(pairs, t.Line);
            default:
                throw new ChatTemplateException($"line {t.Line}: expected an expression, got {(t.Kind == TokenKind.End ? "the end of the tag" : $"'{t.Text}'")}");
        }
    }

    private Expr ParsePostfix(Expr value)
    {
        while (true)
        {
            var t = tokens.Peek();
            if (tokens.TryOperator("."))
                value = new Expr.Attribute(value, tokens.ExpectName(), t.Line);
            else if (tokens.TryOperator("["))
                value = ParseSubscript(value, t.Line);
            else if (tokens.TryOperator("("))
            {
                var (args, kwargs) = ParseArguments();
                value = new Expr.Call(value, args, kwargs, t.Line);
            }
            else if (tokens.TryOperator("|"))
            {
                var name = tokens.ExpectName();
                var (args, kwargs) = tokens.TryOperator("(") ? ParseArguments() : ([], []);
                value = new Expr.Filter(value, name, args, kwargs, t.Line);
            }
            else if (tokens.TryKeyword("is"))
            {
                var negated = tokens.TryKeyword("not");
                var name = tokens.ExpectName();
                List<Expr> args = [];
                if (tokens.TryOperator("("))
                    args = ParseArguments().Args;
                else if (tokens.Peek().Kind is TokenKind.String or TokenKind.Integer or TokenKind.Float)
                    args = [ParsePrimary()];
                value = new Expr.Test(value, name, args, negated, t.Line);
            }
            else
                return value;
        }
    }

    private Expr ParseSubscript(Expr target, int line)
    {
        Expr? start = null;
        if (!tokens.IsOperator(":"))
        {
            start = ParseExpression();
            if (tokens.TryOperator("]"))
                return new Expr.Item(target, start, line);
        }
        tokens.ExpectOperator(":");
        var stop = tokens.IsOperator(":") || tokens.IsOperator("]") ? null : ParseExpression();
        Expr? step = null;
        if (tokens.TryOperator(":") && !tokens.IsOperator("]"))
            step = ParseExpression();
        tokens.ExpectOperator("]");
        return new Expr.Slice(target, start, stop, step, line);
    }

    /// <summary>After "(": positional and name=value arguments up to ")".</summary>
    private (List<Expr> Args, List<(string, Expr)> Kwargs) ParseArguments()
    {
        var args = new List<Expr>();
        var kwargs = new List<(string, Expr)>();
        while (!tokens.TryOperator(")"))
        {
            if (args.Count + kwargs.Count > 0)
            {
                tokens.ExpectOperator(",");
                if (tokens.TryOperator(")"))
                    break;
            }
            if (tokens.Peek().Kind == TokenKind.Name && tokens.IsOperator("=", 1))
            {
                var name = tokens.Next().Text;
                tokens.Next();
                kwargs.Add((name, ParseExpression()));
            }
            else
                args.Add(ParseExpression());
        }
        return (args, kwargs);
    }
}
