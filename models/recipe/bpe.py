"""Byte-level BPE: training from a corpus, encoding, and writing a Hugging Face tokenizer.json.

The tokenizer.json uses the Llama 3 split pattern (digits in groups of up to three,
newlines kept apart from indentation) followed by GPT-2's byte-to-character mapping, so
any BPE implementation that reads tokenizer.json reproduces our ids.
"""
import heapq
import json
from collections import Counter, defaultdict

import regex

SPLIT_PATTERN = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
END_OF_TEXT = "<|endoftext|>"
FIM_PREFIX = "<fim_prefix>"
FIM_MIDDLE = "<fim_middle>"
FIM_SUFFIX = "<fim_suffix>"
FIM_PAD = "<fim_pad>"
# StarCoder's fill-in-the-middle markers, ids 0..4 as StarCoder numbers them.
SPECIAL_TOKENS = [END_OF_TEXT, FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX, FIM_PAD]

_split = regex.compile(SPLIT_PATTERN)


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars)}


BYTE_CHARS = byte_to_unicode()


def pieces(text: str) -> list[str]:
    """Pre-tokenized pieces, each already in byte-level characters."""
    return ["".join(BYTE_CHARS[b] for b in m.encode("utf-8")) for m in _split.findall(text)]


def train(texts, vocab_size: int, min_frequency: int = 2, log=print) -> tuple[dict[str, int], list[tuple[str, str]]]:
    word_counts = Counter()
    for text in texts:
        word_counts.update(pieces(text))
    words = [list(w) for w in word_counts]
    counts = list(word_counts.values())

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for b in range(256):
        vocab[BYTE_CHARS[b]] = len(vocab)

    pair_counts = defaultdict(int)
    pair_words = defaultdict(set)
    for wi, symbols in enumerate(words):
        for a, b in zip(symbols, symbols[1:]):
            pair_counts[(a, b)] += counts[wi]
            pair_words[(a, b)].add(wi)

    # Max-heap with lazy invalidation; ties break on the pair itself so runs are reproducible.
    heap = [(-c, p) for p, c in pair_counts.items()]
    heapq.heapify(heap)
    merges = []
    while len(vocab) < vocab_size and heap:
        negative, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -negative:
            continue
        if -negative < min_frequency:
            break
        merged = pair[0] + pair[1]
        merges.append(pair)
        vocab[merged] = len(vocab)
        changed = set()
        for wi in list(pair_words[pair]):
            symbols = words[wi]
            c = counts[wi]
            for a, b in zip(symbols, symbols[1:]):
                pair_counts[(a, b)] -= c
                changed.add((a, b))
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and symbols[i] == pair[0] and symbols[i + 1] == pair[1]:
                    out.append(merged)
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            words[wi] = out
            for a, b in zip(out, out[1:]):
                pair_counts[(a, b)] += c
                pair_words[(a, b)].add(wi)
                changed.add((a, b))
        del pair_counts[pair]
        for p in changed:
            if p != pair and pair_counts.get(p, 0) > 0:
                heapq.heappush(heap, (-pair_counts[p], p))
        if len(merges) % 1000 == 0:
            log(f"bpe: {len(merges)} merges, vocabulary {len(vocab)}")
    return vocab, merges


class Encoder:
    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]]):
        self.vocab = vocab
        self.ranks = {pair: i for i, pair in enumerate(merges)}
        self.cache: dict[str, list[int]] = {}
        self.special = {tok: vocab[tok] for tok in SPECIAL_TOKENS}

    @classmethod
    def from_file(cls, path: str) -> "Encoder":
        model = json.load(open(path))["model"]
        return cls(model["vocab"], [tuple(m) for m in model["merges"]])

    def _word(self, word: str) -> list[int]:
        cached = self.cache.get(word)
        if cached is not None:
            return cached
        symbols = list(word)
        while len(symbols) > 1:
            best = min(range(len(symbols) - 1), key=lambda i: self.ranks.get((symbols[i], symbols[i + 1]), 1 << 30))
            if (symbols[best], symbols[best + 1]) not in self.ranks:
                break
            pair = (symbols[best], symbols[best + 1])
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
                    out.append(pair[0] + pair[1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            symbols = out
        ids = [self.vocab[s] for s in symbols]
        self.cache[word] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """Plain text only: marker text in the input is encoded as text, never as a special token."""
        ids = []
        for piece in pieces(text):
            ids.extend(self._word(piece))
        return ids


def tokenizer_json(vocab: dict[str, int], merges: list[tuple[str, str]]) -> dict:
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": vocab[tok], "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for tok in SPECIAL_TOKENS
        ],
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": SPLIT_PATTERN}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
            ],
        },
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
            "vocab": vocab,
            "merges": [list(m) for m in merges],
        },
    }


def tokenizer_config(context_length: int) -> dict:
    """tokenizer_config.json for transformers' fast tokenizer: which added tokens play which role."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": END_OF_TEXT,
        "eos_token": END_OF_TEXT,
        "unk_token": None,
        "pad_token": FIM_PAD,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": context_length,
        "additional_special_tokens": [FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX, FIM_PAD],
    }
