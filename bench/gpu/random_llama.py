"""Writes a Hugging Face folder holding a Llama-style model with random weights, for benchmarks.

Sizes: 125m (768 wide, 12 layers) and 1b (2048 wide, 20 layers), grouped KV heads and a 32,000
token vocabulary, as small open models have; tiny is for checking the tooling. The tokenizer is
the default model's (models/minicoder) with placeholder tokens up to the vocabulary size, so
every id the random model can produce decodes. Weights are float32, seeded: the same folder
every time, for our model builder and for transformers alike.

    python3 bench/gpu/random_llama.py --size 125m --out /tmp/llama-125m
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "models", "recipe"))
from llama import LlamaConfig, LlamaForCausalLM, save_safetensors  # noqa: E402

SIZES = {
    "tiny": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
    "125m": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=4),
    "1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=20, num_attention_heads=32, num_key_value_heads=8),
}
VOCAB_SIZE = 32000
CONTEXT_LENGTH = 2048
DEFAULT_TOKENIZER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "models", "minicoder", "tokenizer.json")


def padded_tokenizer(path: str, vocab_size: int) -> tuple[dict, int]:
    """The tokenizer with special placeholder tokens for the ids it lacks; also its end-of-text id."""
    tokenizer = json.load(open(path, encoding="utf-8"))
    used = set(tokenizer["model"]["vocab"].values()) | {t["id"] for t in tokenizer.get("added_tokens", [])}
    if max(used) >= vocab_size:
        raise SystemExit(f"{path} has ids up to {max(used)}, more than a vocabulary of {vocab_size}")
    for token_id in range(vocab_size):
        if token_id not in used:
            tokenizer.setdefault("added_tokens", []).append({
                "id": token_id, "content": f"<unused_{token_id}>", "single_word": False, "lstrip": False,
                "rstrip": False, "normalized": False, "special": True,
            })
    eos = next((t["id"] for t in tokenizer.get("added_tokens", []) if t["content"] == "<|endoftext|>"), 0)
    return tokenizer, eos


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokenizer", default=DEFAULT_TOKENIZER, help="tokenizer.json to pad to the vocabulary")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    tokenizer, eos = padded_tokenizer(args.tokenizer, VOCAB_SIZE)
    config = LlamaConfig(vocab_size=VOCAB_SIZE, max_position_embeddings=CONTEXT_LENGTH, bos_token_id=eos, eos_token_id=eos, **SIZES[args.size])
    torch.manual_seed(args.seed)
    with torch.no_grad():
        model = LlamaForCausalLM(config)
    os.makedirs(args.out, exist_ok=True)
    save_safetensors(os.path.join(args.out, "model.safetensors"), model.state_dict())
    json.dump(config.to_hf(), open(os.path.join(args.out, "config.json"), "w"), indent=2)
    json.dump({"bos_token_id": eos, "eos_token_id": eos}, open(os.path.join(args.out, "generation_config.json"), "w"), indent=2)
    json.dump(tokenizer, open(os.path.join(args.out, "tokenizer.json"), "w", encoding="utf-8"), ensure_ascii=False)
    print(f"{args.out}: {model.parameter_count() / 1e6:.1f}M parameters ({args.size}, seed {args.seed})")


if __name__ == "__main__":
    main()
