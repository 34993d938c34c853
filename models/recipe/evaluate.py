#!/usr/bin/python3
"""Measures a served code model through the server's OpenAI-style HTTP API.

- Single-line infill exact match on held-out files: one line is hidden between a prefix (the
  text above it) and a suffix (the text below it); the greedy completion, stopped at the end of
  the line, must equal the hidden line exactly. With --cursor after-indent the line's
  indentation stays in the prefix (a cursor on a new indented line, as in an editor) and only
  the code after it is hidden.
- Single-stream speed: time to first token and decode tokens/s for a long completion.

    dotnet run -c Release --project src/InferenceServer -- --model models/default &
    /usr/bin/python3 models/recipe/evaluate.py --server http://127.0.0.1:8080 --corpus models/default/corpus.json
"""
import argparse
import json
import os
import random
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import corpus  # noqa: E402


def post(server: str, body: dict, stream: bool = False):
    request = urllib.request.Request(server.rstrip("/") + "/v1/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        response = urllib.request.urlopen(request, timeout=120)
    except urllib.error.HTTPError as e:
        raise SystemExit(f"the server answered {e.code}: {e.read().decode()}") from e
    if not stream:
        return json.load(response)
    return response


def infill_cases(root: str, files, samples: int, seed: int, prefix_chars: int, suffix_chars: int, after_indent: bool):
    """(prefix, hidden line, suffix) triples from the validation files, chosen with the seed."""
    candidates = []
    for path, text in corpus.load_texts(root, files, "validation"):
        lines = text.splitlines(keepends=True)
        offset = 0
        for line in lines:
            body = line.rstrip("\n")
            stripped = body.strip()
            # Lines worth predicting: code, not blank, not a lone bracket or a comment.
            if line.endswith("\n") and len(stripped) >= 6 and not stripped.startswith("#"):
                candidates.append((path, text, offset, len(line)))
            offset += len(line)
    rng = random.Random(seed)
    picked = rng.sample(candidates, min(samples, len(candidates)))
    for path, text, start, length in picked:
        prefix = text[:start]
        if len(prefix) > prefix_chars:
            cut = prefix.find("\n", len(prefix) - prefix_chars)
            prefix = prefix[cut + 1:] if cut >= 0 else prefix[-prefix_chars:]
        suffix = text[start + length:start + length + suffix_chars]
        line = text[start:start + length - 1]
        if after_indent:
            indent = len(line) - len(line.lstrip())
            prefix, line = prefix + line[:indent], line[indent:]
        yield path, prefix, line, suffix


def speed(server: str, prompt: str, tokens: int) -> dict:
    body = {"prompt": prompt, "max_tokens": tokens, "temperature": 0, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    first = None
    usage = None
    with post(server, body, stream=True) as response:
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0].get("text") and first is None:
                first = time.perf_counter()
            usage = chunk.get("usage") or usage
    ended = time.perf_counter()
    generated = usage["completion_tokens"]
    return {
        "prompt_tokens": usage["prompt_tokens"],
        "completion_tokens": generated,
        "time_to_first_token_ms": round((first - started) * 1000, 1),
        "decode_tokens_per_second": round((generated - 1) / (ended - first), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", default="http://127.0.0.1:8080")
    ap.add_argument("--corpus", required=True, help="corpus.json written by train.py (lists the validation files)")
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--prefix-chars", type=int, default=1000)
    ap.add_argument("--suffix-chars", type=int, default=300)
    ap.add_argument("--show", type=int, default=5, help="examples to print")
    ap.add_argument("--cursor", choices=["line-start", "after-indent"], default="line-start",
                    help="where the hidden text starts: the line's start, or after its indentation")
    ap.add_argument("--token-healing", choices=["on", "off"], default="on",
                    help="whether the server spells the prefix's last token again (its default for infill: on)")
    args = ap.parse_args()

    root, files = corpus.read_manifest(args.corpus)
    exact = whitespace_exact = total = 0
    examples = []
    for path, prefix, line, suffix in infill_cases(root, files, args.samples, args.seed, args.prefix_chars, args.suffix_chars,
                                                     args.cursor == "after-indent"):
        reply = post(args.server, {"prompt": prefix, "suffix": suffix, "max_tokens": 48, "temperature": 0, "stop": ["\n"],
                                   "token_healing": args.token_healing == "on"})
        completion = reply["choices"][0]["text"]
        total += 1
        exact += completion == line
        whitespace_exact += completion.strip() == line.strip()
        if len(examples) < args.show:
            examples.append({"file": path, "expected": line, "completion": completion})
    results = {
        "infill_cases": total,
        "cursor": args.cursor,
        "token_healing": args.token_healing,
        "infill_exact_match": round(exact / total, 4),
        "infill_exact_match_ignoring_surrounding_whitespace": round(whitespace_exact / total, 4),
        "speed": speed(args.server, "import os\n\n\ndef main():\n", 256),
        "examples": examples,
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
