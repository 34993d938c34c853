"""Puts the GPU benchmark's sides next to each other, per model: our engine on the paged and on the
dense CUDA path (the load generator's report.json each) and transformers' generate
(hf_generate.py's JSON); writes results.json and results.md and checks the goals for each of our
paths (batch-1 inter-token latency at most 1 ms for the 125M model; at 64 streams at least 5x
transformers' aggregate tokens/s). A side whose file is missing (its stage failed or did not run)
shows as a dash.

    python3 bench/gpu/compare.py --paged 125m ours-125m-paged/report.json --dense 125m ours-125m-dense/report.json \\
        --reference 125m hf-125m.json --paged 1b ... --out DIR
"""
import argparse
import json
import os

ITL_GOAL_MS = 1.0
THROUGHPUT_GOAL = 5.0
GOAL_STREAMS = 64
PATHS = ("paged", "dense")


def load(path):
    if not path or not os.path.exists(path):
        return None
    try:
        return json.load(open(path))
    except (OSError, ValueError):
        return None


def ours(report: dict | None) -> dict | None:
    if report is None or not report.get("runs"):
        return None
    levels = report["runs"][0]["levels"]
    one = next((level for level in levels if level["value"] == 1), None)
    return {
        "gpu": report["environment"].get("gpu"),
        "commit": report["environment"].get("git_commit"),
        "batch1_time_to_first_token_ms": one["time_to_first_token_ms"]["p50"] if one else None,
        "batch1_inter_token_ms": one["inter_token_ms"]["p50"] if one else None,
        "throughput": {level["value"]: {"output_tokens_per_second": level["output_tokens_per_second"], "failed": level["failed"]}
                       for level in levels},
    }


def number(value, spec: str, unit: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{unit}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for side in (*PATHS, "reference"):
        ap.add_argument(f"--{side}", nargs=2, action="append", default=[], metavar=("MODEL", "FILE"))
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    names: list[str] = []
    files: dict[tuple[str, str], str] = {}
    for side in (*PATHS, "reference"):
        for name, path in getattr(args, side):
            names += [name] if name not in names else []
            files[(name, side)] = path

    models = []
    for name in names:
        reference = load(files.get((name, "reference")))
        by_streams = {t["streams"]: t["output_tokens_per_second"] for t in reference["throughput"]} if reference else {}
        model = {"model": name, "parameters": reference.get("parameters") if reference else None,
                 "reference": reference, "paths": {}, "goals": {}}
        for path in PATHS:
            mine = ours(load(files.get((name, path))))
            if mine is None:
                continue
            for streams, row in mine["throughput"].items():
                row["reference_tokens_per_second"] = by_streams.get(streams)
                row["speedup"] = row["output_tokens_per_second"] / by_streams[streams] if by_streams.get(streams) else None
            model["paths"][path] = mine
            if name == "125m" and mine["batch1_inter_token_ms"] is not None:
                model["goals"][f"{path}: batch-1 inter-token latency at most {ITL_GOAL_MS:g} ms"] = mine["batch1_inter_token_ms"] <= ITL_GOAL_MS
            at_goal = mine["throughput"].get(GOAL_STREAMS)
            if at_goal and at_goal["speedup"] is not None:
                model["goals"][f"{path}: {GOAL_STREAMS} streams at least {THROUGHPUT_GOAL:g}x transformers"] = at_goal["speedup"] >= THROUGHPUT_GOAL
        models.append(model)

    first = next((p for m in models for p in m["paths"].values()), None)
    gpu = (first or {}).get("gpu") or next((m["reference"]["gpu"] for m in models if m["reference"]), None)
    os.makedirs(args.out, exist_ok=True)
    json.dump({"gpu": gpu, "models": models}, open(os.path.join(args.out, "results.json"), "w"), indent=2)

    some_reference = next((m["reference"] for m in models if m["reference"]), None)
    lines = [f"# GPU benchmark: {gpu}", "",
             f"Ours: InferenceServer engine on ONNX Runtime's CUDA provider, paged and dense float16 graphs "
             f"(load generator, in-process), commit {(first or {}).get('commit')}. "]
    if some_reference:
        lines += [f"Reference: {some_reference['engine']}. ",
                  f"Prompts of {some_reference['prompt_tokens']} tokens, {some_reference['output_tokens']} output tokens, "
                  "greedy, random float16 weights."]
    lines.append("")
    for m in models:
        r = m["reference"] or {}
        params = f" ({m['parameters'] / 1e6:.0f}M parameters)" if m["parameters"] else ""
        paged, dense = m["paths"].get("paged") or {}, m["paths"].get("dense") or {}
        lines += [f"## {m['model']}{params}", "",
                  "| | paged | dense | transformers |", "| --- | ---: | ---: | ---: |",
                  f"| batch-1 time to first token | {number(paged.get('batch1_time_to_first_token_ms'), '.2f', ' ms')} | "
                  f"{number(dense.get('batch1_time_to_first_token_ms'), '.2f', ' ms')} | {number(r.get('batch1_time_to_first_token_ms'), '.2f', ' ms')} |",
                  f"| batch-1 inter-token latency | {number(paged.get('batch1_inter_token_ms'), '.3f', ' ms')} | "
                  f"{number(dense.get('batch1_inter_token_ms'), '.3f', ' ms')} | {number(r.get('batch1_inter_token_ms'), '.3f', ' ms')} |", "",
                  "| streams | paged tok/s | dense tok/s | transformers tok/s | paged / transformers | dense / transformers |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: |"]
        streams = sorted({*paged.get("throughput", {}), *dense.get("throughput", {}), *(t["streams"] for t in r.get("throughput", []))})
        reference_by_streams = {t["streams"]: t["output_tokens_per_second"] for t in r.get("throughput", [])}
        for s in streams:
            p, d = paged.get("throughput", {}).get(s, {}), dense.get("throughput", {}).get(s, {})
            failed = [f"{name} {row['failed']} failed" for name, row in (("paged", p), ("dense", d)) if row.get("failed")]
            lines.append(f"| {s} | {number(p.get('output_tokens_per_second'), ',.0f')} | {number(d.get('output_tokens_per_second'), ',.0f')} | "
                         f"{number(reference_by_streams.get(s), ',.0f')} | {number(p.get('speedup'), '.1f', 'x')} | {number(d.get('speedup'), '.1f', 'x')} |"
                         + (f" {', '.join(failed)}" if failed else ""))
        lines.append("")
        for goal, met in m["goals"].items():
            lines.append(f"- goal {goal}: {'met' if met else 'NOT met'}")
        lines.append("")
    open(os.path.join(args.out, "results.md"), "w").write("\n".join(lines))
    print("\n".join(lines))
    goals = [met for m in models for met in m["goals"].values()]
    print(f"{', '.join(m['model'] + ': ' + (', '.join(m['paths']) or 'no path') for m in models)}; "
          f"goals: {sum(goals)} met, {len(goals) - sum(goals)} not met")


if __name__ == "__main__":
    main()
