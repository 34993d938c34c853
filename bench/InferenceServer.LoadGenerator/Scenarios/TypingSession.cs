namespace InferenceServer.LoadGenerator.Scenarios;

/// <summary>How the people of the IDE workload type and what their editor sends.</summary>
public sealed record TypingOptions
{
    /// <summary>Most characters of the file before the cursor sent as the prefix (the cut is at a line start).</summary>
    public int PrefixChars { get; init; } = 1500;

    /// <summary>Most characters after the typed region sent as the suffix (cut at a line end).</summary>
    public int SuffixChars { get; init; } = 500;

    /// <summary>About how much of a function body one typing run types before moving elsewhere.</summary>
    public int TypedChars { get; init; } = 200;

    /// <summary>Median interval between keystrokes.</summary>
    public double KeystrokeMs { get; init; } = 150;

    /// <summary>Spread of keystroke intervals: the sigma of the log-normal's underlying normal.</summary>
    public double KeystrokeSigma { get; init; } = 0.35;

    /// <summary>The pause before a new line is this many keystrokes long (at the median).</summary>
    public double LineEndPause { get; init; } = 3;

    /// <summary>The pause before a typing run starts (finding the place), in keystrokes (at the median).</summary>
    public double RunStartPause { get; init; } = 6;

    public int MinMaxTokens { get; init; } = 16;
    public int MaxMaxTokens { get; init; } = 64;
}

/// <summary>One keystroke: wait <see cref="Delay"/>, then ask for a completion of the text as it now is.</summary>
/// <param name="Run">Which typing run of the session (a new file and position each).</param>
/// <param name="Cursor">Offset of the cursor in the file after the keystroke.</param>
public readonly record struct Keystroke(int Run, TimeSpan Delay, string File, int Cursor, string Prefix, string Suffix, int MaxTokens);

/// <summary>
/// One person typing in an editor, as a deterministic sequence of keystrokes for a seed. A typing
/// run picks a file and a function body start, then retypes the text that follows, character by
/// character (the indentation after a line break comes with it, as editors auto-indent), with
/// log-normal intervals and longer pauses at line ends.
/// <para>
/// The prefix is the file's text from a line start chosen when the run begins (at most
/// <see cref="TypingOptions.PrefixChars"/> before the cursor) up to the cursor; that start stays put
/// while the run types, as with editor plugins that send from a fixed line, so consecutive prompts
/// share everything but their last characters. The suffix is the text after the typed region and
/// does not change during a run.
/// </para>
/// </summary>
public sealed class TypingSession
{
    private readonly SourceLibrary _library;
    private readonly TypingOptions _options;
    private readonly int _seed;

    public TypingSession(SourceLibrary library, TypingOptions options, int seed, int session)
    {
        _library = library ?? throw new ArgumentNullException(nameof(library));
        _options = options ?? throw new ArgumentNullException(nameof(options));
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxMaxTokens, options.MinMaxTokens);
        _seed = Seeds.Derive(seed, 0x49444553, session);
    }

    /// <summary>Keystrokes without end: runs follow one another.</summary>
    public IEnumerable<Keystroke> Keystrokes()
    {
        var random = new Random(_seed);
        for (var run = 0; ; run++)
        {
            var (document, position) = PickPlace(random);
            var text = document.Text;
            var typedEnd = LineEndAfter(text, Math.Min(text.Length, position + Math.Max(1, _options.TypedChars)));
            var suffix = SuffixAfter(text, typedEnd);
            var prefixStart = PrefixStart(text, position);
            var cursor = position;
            var first = true;
            while (cursor < typedEnd)
            {
                var typed = text[cursor];
                var advance = 1;
                if (typed == '\n')
                {
                    while (cursor + advance < typedEnd && text[cursor + advance] is ' ' or '\t')
                        advance++;
                }
                var pause = first ? _options.RunStartPause : typed == '\n' ? _options.LineEndPause : 1;
                var delay = Interval(random, _options.KeystrokeMs * pause);
                var maxTokens = random.Next(_options.MinMaxTokens, _options.MaxMaxTokens + 1);
                cursor += advance;
                first = false;
                yield return new Keystroke(run, delay, document.Path, cursor, text[prefixStart..cursor], suffix, maxTokens);
            }
        }
    }

    private TimeSpan Interval(Random random, double medianMs)
    {
        // Capped at ten medians: a person looking away for a minute is not what this measures.
        var ms = Math.Min(Seeds.LogNormal(random, medianMs, _options.KeystrokeSigma), medianMs * 10);
        return TimeSpan.FromMilliseconds(ms);
    }

    /// <summary>A file with a function body to type into, and that body's start; any line start when no file has one.</summary>
    private (SourceDocument Document, int Position) PickPlace(Random random)
    {
        SourceDocument? fallback = null;
        for (var attempt = 0; attempt < 32; attempt++)
        {
            var document = _library.DocumentNear(random.Next(_library.Count), minimumLength: 2);
            var starts = document.FunctionBodyStarts;
            if (starts.Count > 0)
                return (document, starts[random.Next(starts.Count)]);
            fallback ??= document;
        }
        var text = fallback!.Text;
        return (fallback, Math.Max(0, text.LastIndexOf('\n', Math.Max(0, random.Next(text.Length) - 1)) + 1));
    }

    /// <summary>Just past the line break that ends the line holding <paramref name="position"/> (or the end of the text).</summary>
    private static int LineEndAfter(string text, int position)
    {
        if (position >= text.Length)
            return text.Length;
        var newline = text.IndexOf('\n', Math.Max(0, position - 1));
        return newline < 0 ? text.Length : newline + 1;
    }

    private string SuffixAfter(string text, int typedEnd)
    {
        var length = Math.Min(_options.SuffixChars, text.Length - typedEnd);
        if (length <= 0)
            return "";
        var suffix = text.AsSpan(typedEnd, length);
        // Whole lines only, unless the first line alone is longer than the limit.
        var lastNewline = suffix.LastIndexOf('\n');
        return (typedEnd + length < text.Length && lastNewline >= 0 ? suffix[..(lastNewline + 1)] : suffix).ToString();
    }

    private int PrefixStart(string text, int position)
    {
        var earliest = position - _options.PrefixChars;
        if (earliest <= 0)
            return 0;
        var newline = text.IndexOf('\n', earliest - 1);
        return newline < 0 || newline + 1 > position ? position : newline + 1;
    }
}
