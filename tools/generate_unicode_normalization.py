#!/usr/bin/env python3
"""Writes src/Tokenizer/Normalization/UnicodeNormalizationData.g.cs, the Unicode data behind the
tokenizer's managed normalizer (NFC, NFD, NFKC, NFKD; src/Tokenizer/Normalization/UnicodeNormalization.cs).

    apt-get install unicode-data        # Debian's copy of the Unicode Character Database
    python3 tools/generate_unicode_normalization.py [UCD_FOLDER]

UCD_FOLDER defaults to /usr/share/unicode (where Debian's unicode-data package puts it). The files read:
UnicodeData.txt (canonical combining classes, decomposition mappings), CompositionExclusions.txt (the
characters excluded from composition by name) and DerivedNormalizationProps.txt (only to check the
derivation below and to read the version). Deterministic: the same files give the same output.

What the table holds, and what the normalizer derives from it when it loads:
  - the nonzero canonical combining classes, as runs of consecutive code points with one class;
  - every one-level decomposition mapping of UnicodeData.txt, canonical or compatibility (the
    normalizer applies them recursively); Hangul syllables are left out, they decompose by formula;
  - the composition exclusions listed in CompositionExclusions.txt. The full exclusion set adds the
    singletons and the non-starter decompositions, which the normalizer derives; this script checks
    that the derived set equals Full_Composition_Exclusion of DerivedNormalizationProps.txt.

Unicode version: the version of the files given (15.0.0 from Debian 12's unicode-data 15.0.0-1, the
version of libicu72, which .NET's string.Normalize uses on the same machine, so the tests can compare
the two code point by code point). Hugging Face's tokenizers normalize with the crate
unicode-normalization-alignments 0.1.12, whose tables are Unicode 9.0.0: the two agree on every
character assigned by Unicode 9.0, and differ only on text with characters assigned since then
(Unicode's stability policy keeps the normalization of assigned characters unchanged).
"""

import os
import re
import sys

UCD = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/unicode"
HERE = os.path.dirname(os.path.abspath(__file__))
OUTPUT = os.path.join(HERE, "..", "src", "Tokenizer", "Normalization", "UnicodeNormalizationData.g.cs")

S_BASE, S_COUNT = 0xAC00, 11172


def data_lines(name):
    with open(os.path.join(UCD, name), encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                yield line


def version():
    with open(os.path.join(UCD, "DerivedNormalizationProps.txt"), encoding="utf-8") as f:
        match = re.match(r"# DerivedNormalizationProps-(\d+\.\d+\.\d+)\.txt", f.readline())
    if not match:
        sys.exit("cannot read the Unicode version from DerivedNormalizationProps.txt")
    return match.group(1)


def read_unicode_data():
    ccc, decompositions = {}, {}
    for line in data_lines("UnicodeData.txt"):
        fields = line.split(";")
        cp = int(fields[0], 16)
        if int(fields[3]):
            ccc[cp] = int(fields[3])
        if fields[5]:
            parts = fields[5].split()
            compat = parts[0].startswith("<")
            if compat:
                parts = parts[1:]
            decompositions[cp] = (compat, [int(p, 16) for p in parts])
    return ccc, decompositions


def read_property(name, prop):
    result = set()
    for line in data_lines(name):
        fields = [f.strip() for f in line.split(";")]
        if len(fields) < 2 or fields[1] != prop:
            continue
        first, _, last = fields[0].partition("..")
        result.update(range(int(first, 16), int(last or first, 16) + 1))
    return result


def read_exclusions():
    return sorted(int(line.split()[0], 16) for line in data_lines("CompositionExclusions.txt"))


def runs(ccc):
    """(start, count, class) for each run of consecutive code points with the same nonzero class."""
    result = []
    for cp in sorted(ccc):
        if result and result[-1][0] + result[-1][1] == cp and result[-1][2] == ccc[cp]:
            result[-1][1] += 1
        else:
            result.append([cp, 1, ccc[cp]])
    return result


def check(ccc, decompositions, exclusions):
    derived = set(exclusions)
    for cp, (compat, mapping) in decompositions.items():
        if compat:
            continue
        if len(mapping) == 1 or ccc.get(cp, 0) or ccc.get(mapping[0], 0):
            derived.add(cp)
    expected = read_property("DerivedNormalizationProps.txt", "Full_Composition_Exclusion")
    if derived != expected:
        sys.exit(f"derived composition exclusions differ from Full_Composition_Exclusion: "
                 f"{sorted(derived ^ expected)[:10]}")
    if any(S_BASE <= cp < S_BASE + S_COUNT for cp in decompositions):
        sys.exit("UnicodeData.txt lists a Hangul syllable's decomposition; the normalizer computes those")
    if any(cp > 0x1FFFFF or len(m) > 31 for cp, (_, m) in decompositions.items()):
        sys.exit("a decomposition does not fit the packed header (21-bit code point, 5-bit length)")


def int_lines(values, per_line=12):
    for i in range(0, len(values), per_line):
        yield "        " + " ".join(f"0x{v:X}," for v in values[i:i + per_line])


def main():
    ccc, decompositions = read_unicode_data()
    exclusions = read_exclusions()
    check(ccc, decompositions, exclusions)

    class_runs = []
    for start, count, value in runs(ccc):
        class_runs += [start << 8 | value, count]
    packed = []
    for cp in sorted(decompositions):
        compat, mapping = decompositions[cp]
        packed.append(cp | (1 << 21 if compat else 0) | len(mapping) << 22)
        packed += mapping

    out = [
        "// <auto-generated>",
        "// Written by tools/generate_unicode_normalization.py from the Unicode Character Database",
        f"// {version()} (UnicodeData.txt, CompositionExclusions.txt, DerivedNormalizationProps.txt). Do not edit;",
        "// run the script again (see its header for the data source and the Unicode version).",
        "// </auto-generated>",
        "",
        "namespace InferenceServer.Tokenizer.Normalization;",
        "",
        "internal static class UnicodeNormalizationData",
        "{",
        f"    public const string UnicodeVersion = \"{version()}\";",
        "",
        "    /// <summary>Pairs (start << 8 | class, count): runs of code points with one nonzero canonical combining class.</summary>",
        "    public static ReadOnlySpan<int> CombiningClassRuns => new int[]",
        "    {",
        *int_lines(class_runs),
        "    };",
        "",
        "    /// <summary>",
        "    /// The one-level decomposition mappings, by code point: a header (code point | compatibility << 21 |",
        "    /// length << 22), then that many code points. Hangul syllables are not here (they decompose by formula).",
        "    /// </summary>",
        "    public static ReadOnlySpan<int> Decompositions => new int[]",
        "    {",
        *int_lines(packed),
        "    };",
        "",
        "    /// <summary>CompositionExclusions.txt: canonical decompositions that are not composed again.</summary>",
        "    public static ReadOnlySpan<int> CompositionExclusions => new int[]",
        "    {",
        *int_lines(exclusions),
        "    };",
        "}",
        "",
    ]
    with open(OUTPUT, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(out))
    print(f"{os.path.normpath(OUTPUT)}: Unicode {version()}, {len(class_runs) // 2} class runs, "
          f"{len(decompositions)} decompositions, {len(exclusions)} exclusions", file=sys.stderr)


if __name__ == "__main__":
    main()
