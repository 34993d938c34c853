using System.Buffers;
using System.Runtime.CompilerServices;
using System.Text;

namespace InferenceServer.Tokenizer.Normalization;

/// <summary>
/// Unicode normalization forms (UAX #15: NFC, NFD, NFKC, NFKD) on tables of our own
/// (UnicodeNormalizationData.g.cs, written by tools/generate_unicode_normalization.py), so the
/// result does not depend on ICU or on the globalization mode: in invariant mode, which the shipped
/// programs use, .NET's <see cref="string.Normalize(NormalizationForm)"/> leaves non-ASCII text as it is.
/// </summary>
/// <remarks>
/// Text already in the form comes back as the same instance without allocating: a vectorized scan
/// passes over everything below the form's first affected character (all of ASCII), then a quick
/// check per code point. Only the stretch around a character that needs work (from the last starter
/// before it to the next character that can neither change nor combine) is decomposed, reordered
/// and, for NFC and NFKC, composed again. Lone surrogates are left as they are.
/// </remarks>
public static class UnicodeNormalization
{
    /// <summary>The version of the Unicode Character Database the tables were made from.</summary>
    public static string UnicodeVersion => UnicodeNormalizationData.UnicodeVersion;

    /// <summary>
    /// <paramref name="text"/> in normalization form <paramref name="form"/>; the same instance when it
    /// already is.
    /// </summary>
    public static string Normalize(string text, NormalizationForm form)
    {
        ArgumentNullException.ThrowIfNull(text);
        var (firstAffected, _, _, _) = Parameters(form);
        // Below this every character is its own normal form whatever surrounds it (combining class
        // 0, no mapping, never composes with what precedes it); checked against ICU by the tests.
        return text.AsSpan().ContainsAnyInRange(firstAffected, '\uFFFF') ? Tables.Normalize(text, form) : text;
    }

    private static (char FirstAffected, uint QuickCheck, bool Compose, bool Compatibility) Parameters(NormalizationForm form) => form switch
    {
        NormalizationForm.FormC => ('\u0300', Tables.NfcNo | Tables.ComposesWithPrevious, true, false),
        NormalizationForm.FormD => ('\u00C0', Tables.NfdNo, false, false),
        NormalizationForm.FormKC => ('\u00A0', Tables.NfkcNo | Tables.ComposesWithPrevious, true, true),
        NormalizationForm.FormKD => ('\u00A0', Tables.NfkdNo, false, true),
        _ => throw new ArgumentOutOfRangeException(nameof(form), form, "not a Unicode normalization form"),
    };

    /// <summary>The tables, built from the generated data on first use (plain ASCII never gets here).</summary>
    private static class Tables
    {
        // One uint per code point: the canonical combining class, quick-check flags, and where its full
        // decompositions start in Pool. Stored as a two-stage table of 64-code-point blocks, identical
        // blocks shared: most of the code space is one all-zero block.
        public const uint CombiningClassMask = 0xFF;
        public const uint NfdNo = 1 << 8;
        public const uint NfkdNo = 1 << 9;
        public const uint NfcNo = 1 << 10;
        public const uint NfkcNo = 1 << 11;
        public const uint ComposesWithPrevious = 1 << 12;
        private const int PoolShift = 13;
        private const int BlockShift = 6;
        private const int BlockMask = (1 << BlockShift) - 1;

        // Packed code points in the working buffer: code point | class << 24.
        private const int ClassShift = 24;
        private const uint CodePointMask = 0x1FFFFF;

        private const int SBase = 0xAC00, LBase = 0x1100, VBase = 0x1161, TBase = 0x11A7;
        private const int LCount = 19, VCount = 21, TCount = 28, NCount = VCount * TCount, SCount = LCount * NCount;

        private static readonly ushort[] BlockOf;
        private static readonly uint[] Blocks;

        // At a code point's index: the canonical full decomposition's length, its packed code points,
        // then the compatibility one's length and code points (both in canonical order).
        private static readonly uint[] Pool;

        private static readonly Dictionary<ulong, int> Compositions;

        static Tables()
        {
            var combiningClass = new Dictionary<int, int>();
            var classRuns = UnicodeNormalizationData.CombiningClassRuns;
            for (var i = 0; i < classRuns.Length; i += 2)
            {
                for (var k = 0; k < classRuns[i + 1]; k++)
                    combiningClass[(classRuns[i] >> 8) + k] = classRuns[i] & 0xFF;
            }
            int ClassOf(int cp) => combiningClass.GetValueOrDefault(cp);

            var mappings = new Dictionary<int, (bool Compatibility, int[] CodePoints)>();
            var data = UnicodeNormalizationData.Decompositions;
            for (var i = 0; i < data.Length;)
            {
                var header = data[i];
                var length = header >>> 22;
                mappings[header & 0x1FFFFF] = ((header & (1 << 21)) != 0, data.Slice(i + 1, length).ToArray());
                i += 1 + length;
            }

            // Full_Composition_Exclusion: the listed exclusions, singletons, and non-starter decompositions.
            var excluded = new HashSet<int>();
            foreach (var cp in UnicodeNormalizationData.CompositionExclusions)
                excluded.Add(cp);
            foreach (var (cp, (compatibility, codePoints)) in mappings)
            {
                if (!compatibility && (codePoints.Length == 1 || ClassOf(cp) != 0 || ClassOf(codePoints[0]) != 0))
                    excluded.Add(cp);
            }

            var values = new Dictionary<int, uint>();
            foreach (var (cp, combining) in combiningClass)
                values[cp] = (uint)combining;

            Compositions = [];
            foreach (var (cp, (compatibility, codePoints)) in mappings)
            {
                if (compatibility || codePoints.Length != 2 || excluded.Contains(cp))
                    continue;
                Compositions.Add(PairKey(codePoints[0], codePoints[1]), cp);
                values[codePoints[1]] = values.GetValueOrDefault(codePoints[1]) | ComposesWithPrevious;
            }
            for (var v = VBase; v < VBase + VCount; v++)
                values[v] = values.GetValueOrDefault(v) | ComposesWithPrevious;
            for (var t = TBase + 1; t < TBase + TCount; t++)
                values[t] = values.GetValueOrDefault(t) | ComposesWithPrevious;
            for (var s = SBase; s < SBase + SCount; s++)
                values[s] = NfdNo | NfkdNo;

            var pool = new List<uint> { 0 }; // index 0 means "no decomposition"
            var canonical = new List<int>();
            var full = new List<int>();
            foreach (var (cp, (compatibility, _)) in mappings.OrderBy(m => m.Key))
            {
                canonical.Clear();
                full.Clear();
                Expand(cp, compatibility: false, canonical);
                Expand(cp, compatibility: true, full);
                var flags = NfkdNo;
                if (!compatibility)
                {
                    flags |= NfdNo;
                    if (excluded.Contains(cp))
                        flags |= NfcNo | NfkcNo;
                }
                if (!canonical.SequenceEqual(full))
                    flags |= NfkcNo;
                if (pool.Count >= 1 << (32 - PoolShift))
                    throw new InvalidOperationException("the decomposition pool outgrew its index bits");
                values[cp] = values.GetValueOrDefault(cp) | flags | (uint)pool.Count << PoolShift;
                AddToPool(compatibility ? [] : canonical);
                AddToPool(full);
            }
            Pool = [.. pool];
            (BlockOf, Blocks) = BuildStages(values);

            void Expand(int cp, bool compatibility, List<int> into)
            {
                if (cp is >= SBase and < SBase + SCount)
                {
                    foreach (var jamo in HangulJamo(cp))
                        into.Add(jamo);
                }
                else if (mappings.TryGetValue(cp, out var m) && (compatibility || !m.Compatibility))
                {
                    foreach (var part in m.CodePoints)
                        Expand(part, compatibility, into);
                }
                else
                {
                    into.Add(cp);
                }
            }

            void AddToPool(List<int> codePoints)
            {
                var start = pool.Count;
                pool.Add((uint)codePoints.Count);
                foreach (var cp in codePoints)
                {
                    // Canonical order (a stable insertion sort of non-starters), as Segment.Add keeps its buffer.
                    var combining = (uint)ClassOf(cp);
                    var at = pool.Count;
                    while (combining != 0 && at > start + 1 && pool[at - 1] >> ClassShift > combining)
                        at--;
                    pool.Insert(at, (uint)cp | combining << ClassShift);
                }
            }
        }

        private static int[] HangulJamo(int syllable)
        {
            var index = syllable - SBase;
            var l = LBase + index / NCount;
            var v = VBase + index % NCount / TCount;
            var t = TBase + index % TCount;
            return t == TBase ? [l, v] : [l, v, t];
        }

        private static (ushort[] BlockOf, uint[] Blocks) BuildStages(Dictionary<int, uint> values)
        {
            var blockOf = new ushort[0x110000 >> BlockShift]; // every entry starts at block 0, all zero
            var blocks = new List<uint>(new uint[1 << BlockShift]);
            var known = new Dictionary<string, ushort>(StringComparer.Ordinal);
            var block = new uint[1 << BlockShift];
            known[string.Join(',', block)] = 0;
            foreach (var group in values.GroupBy(v => v.Key >> BlockShift).OrderBy(g => g.Key))
            {
                Array.Clear(block);
                foreach (var (cp, value) in group)
                    block[cp & BlockMask] = value;
                var key = string.Join(',', block);
                if (!known.TryGetValue(key, out var number))
                {
                    number = checked((ushort)(blocks.Count >> BlockShift));
                    known[key] = number;
                    blocks.AddRange(block);
                }
                blockOf[group.Key] = number;
            }
            return (blockOf, [.. blocks]);
        }

        private static ulong PairKey(int first, int second) => (ulong)(uint)first << 32 | (uint)second;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static uint Lookup(int cp) => Blocks[(BlockOf[cp >> BlockShift] << BlockShift) | (cp & BlockMask)];

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static int CodePointAt(string text, int index, out int width)
        {
            var c = text[index];
            if (char.IsHighSurrogate(c) && index + 1 < text.Length && char.IsLowSurrogate(text[index + 1]))
            {
                width = 2;
                return char.ConvertToUtf32(c, text[index + 1]);
            }
            width = 1;
            return c; // a lone surrogate stands for itself: no class, no mapping
        }

        /// <summary>The general case: text with a character at or above the form's threshold.</summary>
        public static string Normalize(string text, NormalizationForm form)
        {
            var (firstAffected, quickCheck, compose, compatibility) = Parameters(form);
            var boundary = 0;
            var pos = Scan(text, 0, firstAffected, quickCheck, ref boundary);
            if (pos == text.Length)
                return text; // every character passed the quick check: nothing allocated
            var output = new Output(text.Length);
            var segment = new Segment();
            try
            {
                var written = 0; // text[..written] is settled (copied or rewritten into output)
                while (pos < text.Length)
                {
                    output.Append(text.AsSpan(written, boundary - written));
                    written = segment.Rewrite(text, boundary, quickCheck, compose, compatibility, ref output);
                    pos = Scan(text, written, firstAffected, quickCheck, ref boundary);
                }
                output.Append(text.AsSpan(written));
                return output.ToString();
            }
            finally
            {
                output.Dispose();
                segment.Dispose();
            }
        }

        /// <summary>
        /// Returns where the first code point at or after <paramref name="pos"/> that fails the quick check
        /// starts (or the text's length), and in <paramref name="boundary"/> where the last starter before
        /// it starts: a rewrite begins there. <paramref name="pos"/> is a starter or the text's start.
        /// </summary>
        private static int Scan(string text, int pos, char firstAffected, uint quickCheck, ref int boundary)
        {
            boundary = pos;
            var lastClass = 0u;
            while (pos < text.Length)
            {
                if (text[pos] < firstAffected)
                {
                    var skip = text.AsSpan(pos).IndexOfAnyInRange(firstAffected, '\uFFFF');
                    if (skip < 0)
                        return text.Length;
                    pos += skip;
                    boundary = pos - 1;
                    lastClass = 0;
                }
                var cp = CodePointAt(text, pos, out var width);
                var value = Lookup(cp);
                var combining = value & CombiningClassMask;
                if ((value & quickCheck) != 0 || (combining != 0 && combining < lastClass))
                    return pos;
                if (combining == 0)
                    boundary = pos;
                lastClass = combining;
                pos += width;
            }
            return pos;
        }

        /// <summary>The code points of the stretch being rewritten, packed with their class, in a pooled array.</summary>
        private struct Segment : IDisposable
        {
            private uint[] _items;
            private int _count;

            public Segment() => _items = ArrayPool<uint>.Shared.Rent(32);

            /// <summary>
            /// Rewrites text from <paramref name="start"/> (a starter, or the text's start) up to the next
            /// character that passes the quick check with class 0, into <paramref name="output"/>; returns
            /// where it stopped.
            /// </summary>
            public int Rewrite(string text, int start, uint quickCheck, bool compose, bool compatibility, ref Output output)
            {
                _count = 0;
                var pos = start;
                while (pos < text.Length)
                {
                    var cp = CodePointAt(text, pos, out var width);
                    var value = Lookup(cp);
                    // Nothing before such a character can reorder past it or compose with it.
                    if (pos > start && (value & (quickCheck | CombiningClassMask)) == 0)
                        break;
                    Decompose(cp, value, compatibility);
                    pos += width;
                }
                if (compose)
                    Compose();
                for (var i = 0; i < _count; i++)
                    output.AppendCodePoint((int)(_items[i] & CodePointMask));
                return pos;
            }

            private void Decompose(int cp, uint value, bool compatibility)
            {
                if (cp is >= SBase and < SBase + SCount)
                {
                    foreach (var jamo in HangulJamo(cp))
                        Add((uint)jamo);
                    return;
                }
                var at = (int)(value >> PoolShift);
                if (at != 0)
                {
                    var length = (int)Pool[at];
                    if (compatibility)
                    {
                        at += 1 + length;
                        length = (int)Pool[at];
                    }
                    if (length != 0)
                    {
                        for (var i = 1; i <= length; i++)
                            Add(Pool[at + i]);
                        return;
                    }
                }
                Add((uint)cp | (value & CombiningClassMask) << ClassShift);
            }

            /// <summary>Appends one packed code point, moving a non-starter back past those of higher class (canonical ordering).</summary>
            private void Add(uint packed)
            {
                if (_count == _items.Length)
                {
                    var bigger = ArrayPool<uint>.Shared.Rent(_items.Length * 2);
                    _items.AsSpan(0, _count).CopyTo(bigger);
                    ArrayPool<uint>.Shared.Return(_items);
                    _items = bigger;
                }
                var combining = packed >> ClassShift;
                var at = _count;
                if (combining != 0)
                {
                    while (at > 0 && (_items[at - 1] >> ClassShift) > combining)
                    {
                        _items[at] = _items[at - 1];
                        at--;
                    }
                }
                _items[at] = packed;
                _count++;
            }

            /// <summary>Canonical composition in place: each character joins the last starter unless blocked.</summary>
            private void Compose()
            {
                var starter = -1;
                var written = 0;
                for (var i = 0; i < _count; i++)
                {
                    var item = _items[i];
                    var combining = item >> ClassShift;
                    // Not blocked: right after the starter, or every character between has a lower, nonzero class.
                    if (starter >= 0 && (written == starter + 1 || (_items[written - 1] >> ClassShift) < combining)
                        && TryCompose((int)(_items[starter] & CodePointMask), (int)(item & CodePointMask), out var composite))
                    {
                        _items[starter] = (uint)composite; // a primary composite is always a starter
                        continue;
                    }
                    if (combining == 0)
                        starter = written;
                    _items[written++] = item;
                }
                _count = written;
            }

            private static bool TryCompose(int first, int second, out int composite)
            {
                if (first is >= LBase and < LBase + LCount && second is >= VBase and < VBase + VCount)
                {
                    composite = SBase + ((first - LBase) * VCount + second - VBase) * TCount;
                    return true;
                }
                if (first is >= SBase and < SBase + SCount && (first - SBase) % TCount == 0 && second is > TBase and < TBase + TCount)
                {
                    composite = first + second - TBase;
                    return true;
                }
                return Compositions.TryGetValue(PairKey(first, second), out composite);
            }

            public void Dispose()
            {
                ArrayPool<uint>.Shared.Return(_items);
                _items = [];
            }
        }

        /// <summary>The normalized text as it is built, in a pooled array.</summary>
        private struct Output(int capacity) : IDisposable
        {
            private char[] _chars = ArrayPool<char>.Shared.Rent(capacity + 16);
            private int _length;

            public void Append(ReadOnlySpan<char> text)
            {
                Reserve(text.Length);
                text.CopyTo(_chars.AsSpan(_length));
                _length += text.Length;
            }

            public void AppendCodePoint(int cp)
            {
                Reserve(2);
                if (cp < 0x10000)
                {
                    _chars[_length++] = (char)cp;
                }
                else
                {
                    _chars[_length++] = (char)((cp - 0x10000 >> 10) + 0xD800);
                    _chars[_length++] = (char)((cp & 0x3FF) + 0xDC00);
                }
            }

            private void Reserve(int count)
            {
                if (_length + count <= _chars.Length)
                    return;
                var bigger = ArrayPool<char>.Shared.Rent(Math.Max(_chars.Length * 2, _length + count));
                _chars.AsSpan(0, _length).CopyTo(bigger);
                ArrayPool<char>.Shared.Return(_chars);
                _chars = bigger;
            }

            public override readonly string ToString() => new(_chars, 0, _length);

            public void Dispose()
            {
                ArrayPool<char>.Shared.Return(_chars);
                _chars = [];
            }
        }
    }
}
