"""Agreement of our server's greedy output with a reference forward pass on the same weights.

collect: sends token-id prompts (1 to 1,000 tokens) all at once over gRPC to a running
`inference-server serve`, greedy, with log-probabilities, then the same prompts again (the second
round can reuse the first round's prefixes); writes the prompts, the generated token ids and our
log-probabilities to a JSON file. Needs only grpcio: the few protobuf messages involved are
encoded here by hand (src/Protocol/Protos/inference.proto), so no generated code or protoc.

check: runs the reference (transformers in float16 where it is installed, else the repository's
own Llama in models/recipe, float32) teacher-forced on each prompt plus the tokens we generated, in
one forward pass per sequence, and checks every generated token:
- its reference log-probability is within --margin (0.05) of the reference maximum (our greedy
  choice is the reference's, up to near ties);
- our reported log-probability is within --logprob-tolerance (0.08) of the reference's.
Writes agreement-NAME.json and .md with per-path results; exit code 1 when a path fails.

    python3 bench/gpu/agreement.py collect --grpc 127.0.0.1:50051 --health http://127.0.0.1:8080/health \\
        --hf /tmp/hf-125m --out dense.json
    python3 bench/gpu/agreement.py check --hf /tmp/hf-125m --path dense=dense.json --path paged=paged.json \\
        --device cuda --name 125m --out results/
"""
import argparse
import json
import os
import random
import struct
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

DEFAULT_LENGTHS = "1,2,3,7,15,16,17,31,32,33,64,100,127,128,129,200,255,256,257,400,511,512,513,700,999,1000"
GENERATE = "/inference.v1.Inference/Generate"


# --- protobuf, by hand: varints, fixed32 floats and length-delimited fields are all these messages use ---

def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int32 values go on the wire as 64-bit two's complement
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _delimited(field: int, payload: bytes) -> bytes:
    return _key(field, 2) + _varint(len(payload)) + payload


def encode_generate_request(prompt_ids: list[int], max_tokens: int, logprobs: int) -> bytes:
    """GenerateRequest: prompt_token_ids (3), max_tokens (5), temperature 0 (6, greedy), logprobs (16), ignore_eos (20)."""
    ids = b"".join(_varint(i) for i in prompt_ids)
    return (_delimited(3, _delimited(1, ids))
            + _key(5, 0) + _varint(max_tokens)
            + _key(6, 5) + struct.pack("<f", 0.0)
            + _key(16, 0) + _varint(logprobs)
            + _key(20, 0) + _varint(1))


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def _fields(data: bytes):
    """(field number, wire type, value) for each field of one message."""
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(data, pos)
        elif wire == 2:
            length, pos = _read_varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = data[pos:pos + size], pos + size
        else:
            raise ValueError(f"unexpected wire type {wire}")
        yield field, wire, value


def _int32(value: int) -> int:
    value &= (1 << 32) - 1
    return value - (1 << 32) if value >= 1 << 31 else value


def _packed_varints(payload: bytes) -> list[int]:
    values, pos = [], 0
    while pos < len(payload):
        value, pos = _read_varint(payload, pos)
        values.append(_int32(value))
    return values


def decode_generate_response(data: bytes) -> dict:
    """GenerateResponse: token_ids (2), finish_reason (3), usage (4), logprobs (5)."""
    out = {"token_ids": [], "finish_reason": 0, "usage": {}, "logprobs": []}
    for field, wire, value in _fields(data):
        if field == 2:
            out["token_ids"] += _packed_varints(value) if wire == 2 else [_int32(value)]
        elif field == 3:
            out["finish_reason"] = value
        elif field == 4:
            names = {1: "prompt_tokens", 2: "completion_tokens", 3: "cached_prompt_tokens"}
            out["usage"] = {names[f]: v for f, _, v in _fields(value) if f in names}
        elif field == 5:
            entry = {"token_id": 0, "logprob": 0.0}
            for f, _, v in _fields(value):
                if f == 1:
                    entry["token_id"] = _int32(v)
                elif f == 2:
                    entry["logprob"] = struct.unpack("<f", v)[0]
            out["logprobs"].append(entry)
    return out


# --- collect ---

def wait_healthy(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} did not answer 200 within {seconds:.0f} s")
        time.sleep(0.5)


def collect(args) -> None:
    import grpc  # only collect needs it

    config = json.load(open(os.path.join(args.hf, "config.json")))
    vocab = config["vocab_size"]
    rng = random.Random(args.seed)
    lengths = [int(n) for n in args.lengths.split(",")]
    prompts = [[rng.randrange(vocab) for _ in range(n)] for n in lengths]
    if args.health:
        wait_healthy(args.health, args.wait)

    options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
    with grpc.insecure_channel(args.grpc, options=options) as channel:
        generate = channel.unary_unary(GENERATE)

        def one(prompt: list[int]) -> dict:
            started = time.perf_counter()
            reply = decode_generate_response(generate(encode_generate_request(prompt, args.max_tokens, 1), timeout=args.timeout))
            reply["seconds"] = time.perf_counter() - started
            return reply

        rounds = []
        for number in range(args.rounds):
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=len(prompts)) as pool:
                replies = list(pool.map(one, prompts))
            rounds.append({"round": number + 1, "seconds": time.perf_counter() - started, "replies": replies})
            cached = sum(r["usage"].get("cached_prompt_tokens", 0) for r in replies)
            tokens = sum(len(r["token_ids"]) for r in replies)
            print(f"round {number + 1}: {len(replies)} requests, {tokens} tokens, {cached} cached prompt tokens, "
                  f"{rounds[-1]['seconds']:.2f} s", flush=True)
    json.dump({"hf": args.hf, "max_tokens": args.max_tokens, "prompts": prompts, "rounds": rounds}, open(args.out, "w"))


# --- check ---

class Reference:
    """Log-softmax rows of the reference model for a whole sequence, one forward pass."""

    def __init__(self, hf: str, device: str, engine: str):
        import torch
        self.torch = torch
        self.device = torch.device(device)
        transformers = None
        if engine in ("auto", "transformers"):
            try:
                import transformers
            except ImportError:
                if engine == "transformers":
                    raise
        if transformers is not None:
            dtype = torch.float16 if self.device.type == "cuda" else torch.float32
            major = int(transformers.__version__.split(".")[0])
            kwargs = {"dtype": dtype} if major >= 5 else {"torch_dtype": dtype}
            self.model = transformers.AutoModelForCausalLM.from_pretrained(hf, **kwargs).to(self.device).eval()
            self.name = f"transformers {transformers.__version__} ({dtype}, torch {torch.__version__}, {self.device})"
            self.hf_model = True
        else:
            sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "models", "recipe"))
            import dataclasses
            from llama import LlamaConfig, LlamaForCausalLM, load_safetensors
            raw = json.load(open(os.path.join(hf, "config.json")))
            names = {f.name for f in dataclasses.fields(LlamaConfig)}
            model = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in raw.items() if k in names}))
            model.load_state_dict(load_safetensors(os.path.join(hf, "model.safetensors")))
            self.model = model.to(self.device).eval()
            self.name = f"models/recipe/llama.py (float32, torch {torch.__version__}, {self.device})"
            self.hf_model = False

    def log_softmax(self, ids: list[int]):
        torch = self.torch
        with torch.inference_mode():
            x = torch.tensor([ids], device=self.device)
            logits = self.model(input_ids=x).logits if self.hf_model else self.model(x)
            return torch.log_softmax(logits[0].float(), dim=-1).cpu()


def check_path(reference: Reference, collected: dict, margin: float, tolerance: float) -> dict:
    prompts = collected["prompts"]
    result = {"sequences": 0, "tokens": 0, "worst_margin": 0.0, "worst_logprob_difference": 0.0,
              "not_greedy": 0, "logprob_off": 0, "missing_logprobs": 0, "failures": [], "rounds": []}
    first_round_tokens = None
    for rnd in collected["rounds"]:
        identical = 0
        cached = sum(r["usage"].get("cached_prompt_tokens", 0) for r in rnd["replies"])
        for index, (prompt, reply) in enumerate(zip(prompts, rnd["replies"])):
            ours = reply["token_ids"]
            if first_round_tokens is not None and first_round_tokens[index] == ours:
                identical += 1
            if not ours:
                continue
            lps = reply["logprobs"]
            if len(lps) != len(ours):
                result["missing_logprobs"] += 1
            rows = reference.log_softmax(prompt + ours[:-1])
            result["sequences"] += 1
            for i, token in enumerate(ours):
                row = rows[len(prompt) - 1 + i]
                ref_lp = float(row[token])
                gap = ref_lp - float(row.max())
                result["tokens"] += 1
                result["worst_margin"] = min(result["worst_margin"], gap)
                problems = []
                if gap < -margin:
                    result["not_greedy"] += 1
                    problems.append(f"reference prefers token {int(row.argmax())} by {-gap:.4f}")
                if i < len(lps):
                    diff = abs(lps[i]["logprob"] - ref_lp)
                    result["worst_logprob_difference"] = max(result["worst_logprob_difference"], diff)
                    if diff > tolerance:
                        result["logprob_off"] += 1
                        problems.append(f"our logprob {lps[i]['logprob']:.4f}, reference {ref_lp:.4f}")
                if problems and len(result["failures"]) < 20:
                    result["failures"].append({"round": rnd["round"], "prompt_tokens": len(prompt), "position": i,
                                               "token": token, "problems": problems})
        result["rounds"].append({"round": rnd["round"], "seconds": rnd["seconds"], "cached_prompt_tokens": cached,
                                 "generated_tokens": sum(len(r["token_ids"]) for r in rnd["replies"]),
                                 "same_tokens_as_round_1": identical if first_round_tokens is not None else None})
        if first_round_tokens is None:
            first_round_tokens = [r["token_ids"] for r in rnd["replies"]]
    result["pass"] = (result["tokens"] > 0 and result["not_greedy"] == 0 and result["logprob_off"] == 0
                      and result["missing_logprobs"] == 0)
    return result


def check(args) -> None:
    reference = Reference(args.hf, args.device, args.reference)
    report = {"name": args.name, "reference": reference.name, "margin": args.margin,
              "logprob_tolerance": args.logprob_tolerance, "paths": {}}
    for name, path in args.path:
        started = time.perf_counter()
        report["paths"][name] = check_path(reference, json.load(open(path)), args.margin, args.logprob_tolerance)
        report["paths"][name]["check_seconds"] = time.perf_counter() - started
    os.makedirs(args.out, exist_ok=True)
    base = os.path.join(args.out, f"agreement-{args.name}")
    json.dump(report, open(base + ".json", "w"), indent=2)
    lines = [f"## Agreement {args.name}", "",
             f"Reference: {reference.name}. Every generated token: reference log-probability within "
             f"{args.margin} of the reference maximum, ours within {args.logprob_tolerance} of the reference's.", "",
             "| path | result | sequences | tokens | worst margin | worst logprob difference | not greedy | logprob off | cached prompt tokens (round 2) | same tokens in round 2 |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in report["paths"].items():
        second = r["rounds"][1] if len(r["rounds"]) > 1 else {}
        lines.append(f"| {name} | {'PASS' if r['pass'] else 'FAIL'} | {r['sequences']} | {r['tokens']} | {r['worst_margin']:.4f} | "
                     f"{r['worst_logprob_difference']:.4f} | {r['not_greedy']} | {r['logprob_off']} | "
                     f"{second.get('cached_prompt_tokens', '—')} | {second.get('same_tokens_as_round_1', '—')} |")
    for name, r in report["paths"].items():
        for failure in r["failures"][:5]:
            lines.append(f"- {name}: round {failure['round']}, prompt of {failure['prompt_tokens']}, token {failure['position']}: "
                         + "; ".join(failure["problems"]))
    lines.append("")
    open(base + ".md", "w").write("\n".join(lines))
    print("\n".join(lines))
    print("; ".join(f"{name} {'PASS' if r['pass'] else 'FAIL'} ({r['tokens']} tokens, worst margin {r['worst_margin']:.4f}, "
                    f"worst logprob difference {r['worst_logprob_difference']:.4f})" for name, r in report["paths"].items()))
    sys.exit(0 if all(r["pass"] for r in report["paths"].values()) else 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect", help="send the prompts to a running server and keep what it generated")
    c.add_argument("--grpc", required=True, help="HOST:PORT of the server's gRPC port")
    c.add_argument("--health", help="URL that answers 200 once the server is ready (waited for)")
    c.add_argument("--wait", type=float, default=300, help="seconds to wait for --health")
    c.add_argument("--hf", required=True, help="the Hugging Face folder the model was built from (for its vocabulary size)")
    c.add_argument("--out", required=True)
    c.add_argument("--lengths", default=DEFAULT_LENGTHS, help="prompt lengths in tokens, comma-separated")
    c.add_argument("--max-tokens", type=int, default=32)
    c.add_argument("--rounds", type=int, default=2)
    c.add_argument("--seed", type=int, default=1)
    c.add_argument("--timeout", type=float, default=120, help="seconds per request")
    k = sub.add_parser("check", help="check collected outputs against the reference")
    k.add_argument("--hf", required=True)
    k.add_argument("--path", nargs=2, action="append", metavar=("NAME", "COLLECTED"), required=True)
    k.add_argument("--name", required=True, help="names the output files (agreement-NAME.json, .md)")
    k.add_argument("--out", required=True, help="folder for the results")
    k.add_argument("--device", default="cuda")
    k.add_argument("--reference", choices=["auto", "transformers", "recipe"], default="auto")
    k.add_argument("--margin", type=float, default=0.05)
    k.add_argument("--logprob-tolerance", type=float, default=0.08)
    args = ap.parse_args()
    collect(args) if args.command == "collect" else check(args)


if __name__ == "__main__":
    main()
