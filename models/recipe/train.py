#!/usr/bin/python3
"""Pretrains a small Llama-architecture code model with fill-in-the-middle, from scratch.

Steps: scan the corpus and write its manifest, train the BPE tokenizer, build training
samples (half of them fill-in-the-middle, prefix-suffix-middle or suffix-prefix-middle in
equal parts), train, and save a Hugging Face folder (config.json, model.safetensors,
tokenizer.json) that `inference-server build-model` turns into a served ONNX folder.

    /usr/bin/python3 models/recipe/train.py --out models/local/minicoder-hf            # CPU
    python3 models/recipe/train.py --device cuda --size gpu --out /tmp/minicoder-hf   # GPU

--resume FOLDER carries on training a folder this script wrote (same tokenizer and
architecture, a new warm-up and decay), so a CPU budget can be spent in several runs.
"""
import argparse
import json
import math
import os
import random
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bpe  # noqa: E402
import corpus  # noqa: E402
from llama import LlamaConfig, LlamaForCausalLM, load_safetensors, save_safetensors  # noqa: E402

# Two sizes: the CPU one finishes in about an hour on two cores; the GPU one is what we
# would ship given an accelerator. Both are Llama-style with grouped KV heads.
SIZES = {
    "cpu": dict(model=dict(hidden_size=256, intermediate_size=768, num_hidden_layers=8, num_attention_heads=8,
                           num_key_value_heads=2), seq=512, batch=8, lr=2e-3, tokens=2_600_000),
    "gpu": dict(model=dict(hidden_size=384, intermediate_size=1024, num_hidden_layers=12, num_attention_heads=6,
                           num_key_value_heads=2), seq=1024, batch=64, lr=1.5e-3, tokens=300_000_000),
}
VOCAB_SIZE = 8192
CONTEXT_LENGTH = 1024
CHUNK_CHARS = 1800
FIM_RATE = 0.5
# Fixed, so that runs with other seeds (a resumed run, say) report comparable losses.
VALIDATION_SEED = 1235


def chunks(text: str, max_chars: int):
    """Runs of whole lines up to max_chars (a longer single line is its own chunk)."""
    current, size = [], 0
    for line in text.splitlines(keepends=True):
        if current and size + len(line) > max_chars:
            yield "".join(current)
            current, size = [], 0
        current.append(line)
        size += len(line)
    if current:
        yield "".join(current)


def fim_split(text: str, rng: random.Random) -> tuple[str, str, str]:
    """Prefix, middle, suffix. Half the time the cut points fall on line starts, the way
    an editor asks for whole lines; otherwise anywhere, as for a cursor mid-line."""
    if rng.random() < 0.5:
        starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n" and i + 1 < len(text)] + [len(text)]
        a, b = sorted(rng.sample(starts, 2)) if len(starts) > 2 else (0, len(text))
    else:
        a, b = sorted(rng.randint(0, len(text)) for _ in range(2))
    return text[:a], text[a:b], text[b:]


def sample_tokens(text: str, encoder: bpe.Encoder, rng: random.Random) -> list[int]:
    s = encoder.special
    if rng.random() >= FIM_RATE:
        return encoder.encode(text) + [s[bpe.END_OF_TEXT]]
    prefix, middle, suffix = fim_split(text, rng)
    p, m, x = encoder.encode(prefix), encoder.encode(middle), encoder.encode(suffix)
    if rng.random() < 0.5:  # prefix-suffix-middle: what the server sends
        ids = [s[bpe.FIM_PREFIX]] + p + [s[bpe.FIM_SUFFIX]] + x + [s[bpe.FIM_MIDDLE]] + m
    else:  # suffix-prefix-middle (StarCoder's variant: both markers first)
        ids = [s[bpe.FIM_PREFIX], s[bpe.FIM_SUFFIX]] + x + [s[bpe.FIM_MIDDLE]] + p + m
    return ids + [s[bpe.END_OF_TEXT]]


def token_stream(texts: list[str], encoder: bpe.Encoder, seed: int) -> torch.Tensor:
    rng = random.Random(seed)
    samples = [sample_tokens(c, encoder, rng) for t in texts for c in chunks(t, CHUNK_CHARS)]
    rng.shuffle(samples)
    return torch.tensor([i for sample in samples for i in sample], dtype=torch.long)


def windows(stream: torch.Tensor, seq: int) -> torch.Tensor:
    count = (len(stream) - 1) // seq
    return torch.stack([stream[i * seq:i * seq + seq + 1] for i in range(count)])


@torch.no_grad()
def validation_loss(model, val: torch.Tensor, batch: int, device) -> float:
    model.eval()
    total, n = 0.0, 0
    for i in range(0, len(val), batch):
        w = val[i:i + batch].to(device)
        logits = model(w[:, :-1])
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1), reduction="sum").item()
        n += w[:, 1:].numel()
    model.train()
    return total / n


def save_hf_folder(out: str, model, config: LlamaConfig, tokenizer: dict, summary: dict) -> None:
    os.makedirs(out, exist_ok=True)
    save_safetensors(os.path.join(out, "model.safetensors"), model.state_dict())
    json.dump(config.to_hf(), open(os.path.join(out, "config.json"), "w"), indent=2)
    json.dump({"bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id},
              open(os.path.join(out, "generation_config.json"), "w"), indent=2)
    json.dump(tokenizer, open(os.path.join(out, "tokenizer.json"), "w"), ensure_ascii=False)
    json.dump(bpe.tokenizer_config(config.max_position_embeddings), open(os.path.join(out, "tokenizer_config.json"), "w"), indent=2)
    json.dump(summary, open(os.path.join(out, "training.json"), "w"), indent=2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="Hugging Face folder to write")
    ap.add_argument("--source", default=corpus.default_source(), help="root of the standard library to train on (default: this interpreter's)")
    ap.add_argument("--packages", action=argparse.BooleanOptionalAction, default=True,
                    help="also train on the permissively licensed packages Debian installs (corpus.PACKAGES)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--size", choices=sorted(SIZES), default=None, help="model and schedule (default: gpu on cuda, cpu otherwise)")
    ap.add_argument("--tokens", type=int, default=None, help="training tokens (default: the size's budget)")
    ap.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the size's)")
    ap.add_argument("--resume", default=None, help="folder written by this script to carry on training from")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--checkpoint-minutes", type=float, default=20,
                    help="also write --out every so often, so a run stopped early still leaves a usable folder (0: only at the end)")
    args = ap.parse_args()

    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu")
    size = SIZES[args.size or ("gpu" if device.type == "cuda" else "cpu")]
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    log = lambda msg: print(msg, flush=True)  # noqa: E731

    sources = [corpus.stdlib_source(args.source)]
    if args.packages:
        sources += corpus.package_sources()
    os.makedirs(args.out, exist_ok=True)
    corpus.write_manifest(os.path.join(args.out, "corpus.json"), sources)
    stdlib_train_texts = [t for _, t in corpus.load_texts(sources[0], "train")]
    train_texts = stdlib_train_texts + [t for source in sources[1:] for _, t in corpus.load_texts(source, "train")]
    # The validation loss is the standard library's held-out files, comparable across runs;
    # the packages' held-out files are measured separately at the end.
    val_texts = [t for _, t in corpus.load_texts(sources[0], "validation")]
    package_val_texts = [t for source in sources[1:] for _, t in corpus.load_texts(source, "validation")]
    log(f"corpus: {len(train_texts)} train files, {len(val_texts)} + {len(package_val_texts)} validation files "
        f"from {len(sources)} sources")

    earlier = []
    if args.resume:
        # Same tokenizer and architecture as the run being carried on; its record is kept.
        encoder = bpe.Encoder.from_file(os.path.join(args.resume, "tokenizer.json"))
        vocab, merges = encoder.vocab, list(encoder.ranks)
        fields = set(LlamaConfig.__dataclass_fields__)
        config = LlamaConfig(**{k: v for k, v in json.load(open(os.path.join(args.resume, "config.json"))).items() if k in fields})
        record = json.load(open(os.path.join(args.resume, "training.json")))
        earlier = record.pop("earlier_runs", []) + [record]
    else:
        # The tokenizer learns from the standard library alone: enough text for 8k merges, and quick.
        vocab, merges = bpe.train(stdlib_train_texts, VOCAB_SIZE, log=log)
        encoder = bpe.Encoder(vocab, merges)
        config = LlamaConfig(vocab_size=len(vocab), max_position_embeddings=CONTEXT_LENGTH,
                             bos_token_id=vocab[bpe.END_OF_TEXT], eos_token_id=vocab[bpe.END_OF_TEXT], **size["model"])
    tokenizer = bpe.tokenizer_json(vocab, merges)

    seq, batch = size["seq"], size["batch"]
    val = windows(token_stream(val_texts, encoder, seed=VALIDATION_SEED), seq)
    package_val = windows(token_stream(package_val_texts, encoder, seed=VALIDATION_SEED), seq) if package_val_texts else None
    model = LlamaForCausalLM(config)
    if args.resume:
        model.load_state_dict(load_safetensors(os.path.join(args.resume, "model.safetensors")))
        log(f"resumed from {args.resume} after {sum(r['train_tokens'] for r in earlier)} tokens")
    model = model.to(device)
    log(f"model: {model.parameter_count() / 1e6:.2f}M parameters on {device}; validation {val.numel()} tokens")

    budget = args.tokens or size["tokens"]
    steps = max(1, budget // (seq * batch))
    warmup = max(1, steps // 20)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.dim() < 2 else decay).append(p)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=args.lr or size["lr"], betas=(0.9, 0.95))
    peak = args.lr or size["lr"]
    schedule = lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))  # noqa: E731
    amp = device.type == "cuda"

    def save(done_steps: int) -> dict:
        summary = {
            "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
            "parameters": model.parameter_count(),
            "train_tokens": done_steps * seq * batch,
            "sequence_length": seq,
            "batch": batch,
            "steps": done_steps,
            "peak_learning_rate": peak,
            "minutes": round((time.time() - started) / 60, 1),
            "validation": history,
            "validation_loss_packages": package_history or None,
            "torch": torch.__version__,
            "seed": args.seed,
        }
        if done_steps < steps:
            summary["planned_steps"] = steps
        if earlier:
            summary["resumed_from"] = args.resume
            summary["earlier_runs"] = earlier
        save_hf_folder(args.out, model, config, tokenizer, summary)
        return summary

    epoch, order, cursor, train = 0, None, 0, None
    started = time.time()
    history, package_history = [], {}
    last_checkpoint = started
    for step in range(steps):
        if train is None or cursor + batch > len(order):
            # Each pass over the corpus draws new fill-in-the-middle cut points.
            train = windows(token_stream(train_texts, encoder, seed=args.seed + 100 + epoch), seq)
            order = torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed + epoch))
            cursor, epoch = 0, epoch + 1
            log(f"pass {epoch}: {train.numel()} tokens")
        w = train[order[cursor:cursor + batch]].to(device)
        cursor += batch
        for group in optimizer.param_groups:
            group["lr"] = peak * schedule(step)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(w[:, :-1])
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 20 == 0 or step == steps - 1:
            elapsed = time.time() - started
            log(f"step {step + 1}/{steps} loss {loss.item():.3f} lr {optimizer.param_groups[0]['lr']:.2e} "
                f"{(step + 1) * seq * batch / elapsed:.0f} tok/s")
        if (step + 1) % max(1, steps // 5) == 0 or step == steps - 1:
            # A fixed subset along the way; the whole held-out set at the end.
            v = validation_loss(model, val if step == steps - 1 else val[:64], batch, device)
            history.append({"step": step + 1, "train_tokens": (step + 1) * seq * batch, "validation_loss": round(v, 4)})
            log(f"validation loss {v:.4f} (perplexity {math.exp(v):.2f})")
            if step == steps - 1 and package_val is not None:
                package_history = {"step": step + 1, "validation_loss": round(validation_loss(model, package_val, batch, device), 4)}
                log(f"packages' validation loss {package_history['validation_loss']:.4f}")
        if args.checkpoint_minutes > 0 and step < steps - 1 and time.time() - last_checkpoint > args.checkpoint_minutes * 60:
            # A checkpoint carries the schedule's position only in its record: resuming from it starts a new schedule.
            save(step + 1)
            last_checkpoint = time.time()
            log(f"checkpoint after step {step + 1} in {args.out}")

    summary = save(steps)
    log(f"saved {args.out}: {json.dumps(summary)}")


if __name__ == "__main__":
    main()
