#!/usr/bin/env bash
# The GPU benchmark, in one run on a machine with an NVIDIA GPU, from the repository root:
# for random-weight Llama-style models of 125M and 1B parameters, our engine on the paged float16
# graph (the load generator's concurrency sweep, in-process) and transformers' generate on the same
# weights, side by side in $OUT/results.json and results.md.
#
#   APP=/tmp/gpu-app OUT=/tmp/gpu-results bench/gpu/run.sh
#
# APP: what bench/gpu/pack.sh published. Needs python3 with torch (CUDA), transformers and numpy,
# and the CUDA 13 runtime libraries (libcudart, libcublas, libcublasLt, libcurand) on the library
# path; those that pip's nvidia-* packages installed are found and added.
set -euo pipefail
APP=${APP:?set APP to the folder bench/gpu/pack.sh published}
OUT=${OUT:-/tmp/gpu-results}
WORK=${WORK:-/tmp/gpu-work}
SIZES=${SIZES:-"125m 1b"}
LEVELS=${LEVELS:-1,8,64,256}
DURATION=${DURATION:-15}
PROMPT_TOKENS=${PROMPT_TOKENS:-128}
OUTPUT_TOKENS=${OUTPUT_TOKENS:-128}
cd "$(dirname "$0")/../.."
mkdir -p "$OUT" "$WORK"

libs=$(find / -xdev \( -name 'libcublasLt.so.13*' -o -name 'libcudart.so.13*' -o -name 'libcurand.so.10*' \) 2>/dev/null | xargs -r -n1 dirname | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"

pairs=()
for size in $SIZES; do
  python3 bench/gpu/random_llama.py --size "$size" --out "$WORK/hf-$size"
  "$APP/inference-server" build-model --input "$WORK/hf-$size" --output "$WORK/paged-$size" --graph paged --precision fp16 --overwrite
  "$APP/inference-loadgen" --target inprocess --device cuda --model "$WORK/paged-$size" --workload concurrency \
    --levels "$LEVELS" --prompt-tokens "$PROMPT_TOKENS" --output-tokens "$OUTPUT_TOKENS" --duration "$DURATION" \
    --max-batch 256 --no-progress --out "$OUT/ours-$size"
  python3 bench/gpu/hf_generate.py --model "$WORK/hf-$size" --out "$OUT/hf-$size.json" --batches "$LEVELS" \
    --prompt-tokens "$PROMPT_TOKENS" --output-tokens "$OUTPUT_TOKENS"
  pairs+=(--pair "$size" "$OUT/ours-$size/report.json" "$OUT/hf-$size.json")
done
python3 bench/gpu/compare.py "${pairs[@]}" --out "$OUT"
