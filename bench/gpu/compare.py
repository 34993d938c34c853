"""Puts the GPU benchmark's two sides next to each other: our engine (the load generator's
report.json) and transformers' generate (hf_generate.py's JSON), per model; writes
results.json and results.md and checks the goals (batch-1 inter-token latency at most 1 ms for
the 125M model; at 64 streams at least 5x transformers' aggregate tokens/s).

    python3 bench/gpu/compare.py --pair 125m ours-125m/report.json hf-125m.json --pair 1b ... --out DIR
"""
import argparse
import json
import os

ITL_GOAL_MS = 1.0
THROUGHPUT_GOAL = 5.0
GOAL_STREAMS = 64


def ours(path: str) -> dict:
    report = json.load(open(path))
    levels = report["runs"][0]["levels"]
    one = next(level for level in levels if level["value"] == 1)
    return {
        "engine": "InferenceServer engine, paged graph on ONNX Runtime's CUDA provider (load generator, inprocess)",
        "gpu": report["environment"].get("gpu"),
        "commit": report["environment"].get("git_commit"),
        "batch1_time_to_first_token_ms": one["time_to_first_token_ms"]["p50"],
        "batch1_inter_token_ms": one["inter_token_ms"]["p50"],
        "throughput": [{"streams": level["value"], "output_tokens_per_second": level["output_tokens_per_second"],
                        "failed": level["failed"]} for level in levels],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", nargs=3, action="append", metavar=("NAME", "OURS", "REFERENCE"), required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    models = []
    for name, ours_path, reference_path in args.pair:
        mine, reference = ours(ours_path), json.load(open(reference_path))
        by_streams = {t["streams"]: t["output_tokens_per_second"] for t in reference["throughput"]}
        rows = [dict(t, reference_tokens_per_second=by_streams.get(t["streams"]),
                     speedup=t["output_tokens_per_second"] / by_streams[t["streams"]] if by_streams.get(t["streams"]) else None)
                for t in mine["throughput"]]
        goals = {}
        if name == "125m":
            goals["batch1_inter_token_ms_at_most_1"] = mine["batch1_inter_token_ms"] <= ITL_GOAL_MS
        at_goal = next((r for r in rows if r["streams"] == GOAL_STREAMS and r["speedup"] is not None), None)
        if at_goal:
            goals[f"{GOAL_STREAMS}_streams_at_least_{THROUGHPUT_GOAL:g}x"] = at_goal["speedup"] >= THROUGHPUT_GOAL
        models.append({"model": name, "parameters": reference.get("parameters"), "ours": mine, "reference": reference,
                       "throughput": rows, "goals": goals})

    gpu = models[0]["ours"]["gpu"] or models[0]["reference"]["gpu"]
    os.makedirs(args.out, exist_ok=True)
    json.dump({"gpu": gpu, "models": models}, open(os.path.join(args.out, "results.json"), "w"), indent=2)

    lines = [f"# GPU benchmark: {gpu}", "",
             f"Ours: {models[0]['ours']['engine']}, commit {models[0]['ours']['commit']}. ",
             f"Reference: {models[0]['reference']['engine']}. ",
             f"Prompts of {models[0]['reference']['prompt_tokens']} tokens, {models[0]['reference']['output_tokens']} output tokens, greedy, random float16 weights.", ""]
    for m in models:
        o, r = m["ours"], m["reference"]
        params = f" ({m['parameters'] / 1e6:.0f}M parameters)" if m["parameters"] else ""
        lines += [f"## {m['model']}{params}", "",
                  "| | ours | transformers |", "| --- | ---: | ---: |",
                  f"| batch-1 time to first token | {o['batch1_time_to_first_token_ms']:.2f} ms | {r['batch1_time_to_first_token_ms']:.2f} ms |",
                  f"| batch-1 inter-token latency | {o['batch1_inter_token_ms']:.3f} ms | {r['batch1_inter_token_ms']:.3f} ms |", "",
                  "| streams | ours tok/s | transformers tok/s | ratio |", "| ---: | ---: | ---: | ---: |"]
        for row in m["throughput"]:
            ref = f"{row['reference_tokens_per_second']:,.0f}" if row["reference_tokens_per_second"] else "—"
            ratio = f"{row['speedup']:.1f}x" if row["speedup"] else "—"
            lines.append(f"| {row['streams']} | {row['output_tokens_per_second']:,.0f} | {ref} | {ratio} |")
        lines.append("")
        for goal, met in m["goals"].items():
            lines.append(f"- goal {goal.replace('_', ' ')}: {'met' if met else 'NOT met'}")
        lines.append("")
    open(os.path.join(args.out, "results.md"), "w").write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
