"""The reference side of the GPU benchmark: Hugging Face transformers' generate on the same weights.

For one Hugging Face folder, in float16 on the GPU (float32 with --device cpu, for checking the
tooling anywhere), greedy, ignoring end-of-text (min_new_tokens):
- batch-1 time to first token: generate with max_new_tokens=1 (prefill and one token);
- batch-1 inter-token latency: (generate N+1 tokens - generate 1 token) / N;
- aggregate tokens/s at each batch size: B prompts in one generate call of N new tokens each.
Each figure is the median of several timed runs after a warm-up. Prompts are seeded random ids
of the given length (the weights are random too: the text means nothing). Writes JSON.

    python3 bench/gpu/hf_generate.py --model /tmp/llama-125m --out hf-125m.json
"""
import argparse
import json
import platform
import statistics
import time

import torch
import transformers


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, repeats: int, device: torch.device) -> float:
    """Median seconds of fn() over repeats runs, after one warm-up."""
    fn()
    synchronize(device)
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        synchronize(device)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="Hugging Face folder")
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--batches", default="1,8,64,256")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--output-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()

    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    # transformers 5 names the argument dtype; older versions torch_dtype.
    kwargs = {"dtype": dtype} if int(transformers.__version__.split(".")[0]) >= 5 else {"torch_dtype": dtype}
    model = transformers.AutoModelForCausalLM.from_pretrained(args.model, **kwargs).to(device).eval()
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(args.seed)

    def generate(batch: int, new_tokens: int):
        ids = torch.randint(0, min(vocab, 8192), (batch, args.prompt_tokens), generator=generator).to(device)
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                                 min_new_tokens=new_tokens, do_sample=False, pad_token_id=model.config.eos_token_id)
        assert out.shape == (batch, args.prompt_tokens + new_tokens), out.shape
        return out

    first = timed(lambda: generate(1, 1), args.repeats, device)
    longer = timed(lambda: generate(1, args.output_tokens + 1), args.repeats, device)
    result = {
        "engine": f"transformers {transformers.__version__} generate (torch {torch.__version__}, {str(dtype).removeprefix('torch.')}, greedy)",
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "python": platform.python_version(),
        "model": args.model,
        "parameters": sum(p.numel() for p in model.parameters()),
        "prompt_tokens": args.prompt_tokens,
        "output_tokens": args.output_tokens,
        "batch1_time_to_first_token_ms": first * 1000,
        "batch1_inter_token_ms": (longer - first) / args.output_tokens * 1000,
        "throughput": [],
    }
    for batch in (int(b) for b in args.batches.split(",")):
        seconds = timed(lambda: generate(batch, args.output_tokens), max(1, args.repeats // 2), device)
        result["throughput"].append({"streams": batch, "seconds": seconds, "output_tokens_per_second": batch * args.output_tokens / seconds})
        print(f"batch {batch}: {batch * args.output_tokens / seconds:.0f} tokens/s", flush=True)
    json.dump(result, open(args.out, "w"), indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
