#!/usr/bin/env bash
# Peer comparison: one Hugging Face folder of random Llama weights per model shape, converted for
# each engine (our model folder and a GGUF, both by build-model), then our engine, llama.cpp
# (node-llama-cpp) and ONNX Runtime GenAI on the same prompt tokens. Writes
# bench/results/<date>-<machine>-peers/ with report.json, report.md, report.html and raw/.
# See README.md beside this script; every setting below can be overridden from the environment.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

MODELS=${MODELS:-"$ROOT/models/configs/llama-20m.json $HERE/configs/llama-125m.json"}  # config files; the name is the file's
LEVELS=${LEVELS:-1,4,16}           # stream counts
REQUESTS=${REQUESTS:-16}           # requests per stream count, spread over its streams
PROMPT_TOKENS=${PROMPT_TOKENS:-256}
OUTPUT_TOKENS=${OUTPUT_TOKENS:-64}
THREADS=${THREADS:-2}              # compute threads of every engine
CONTEXT=${CONTEXT:-512}            # tokens of KV cache per sequence in every engine
ROUNDS=${ROUNDS:-1}                # runs of every engine; the report keeps each engine's best per stream count
SEED=${SEED:-1}                    # weights and prompts
MACHINE=${MACHINE:-$(hostname -s)}
OUT=${OUT:-$ROOT/bench/results/$(date -u +%Y-%m-%d)-$MACHINE-peers}
WORK=${WORK:-${TMPDIR:-/tmp}/inferenceserver-peers}  # models (hundreds of MB), not kept with the results
NOTE=${NOTE:-}                     # a line added to the report's notes (e.g. what else ran on the machine)
MANIFEST=$ROOT/bench/InferenceServer.LoadGenerator/workloads/python-stdlib.json

die() {
    echo "run.sh: $*" >&2
    exit 1
}
for tool in dotnet node npm; do
    command -v "$tool" >/dev/null 2>&1 || die "needs '$tool' on PATH"
done
[[ -e "$OUT" ]] && die "$OUT exists; remove it or set OUT"

echo "building" >&2
for project in src/InferenceServer/InferenceServer.csproj bench/InferenceServer.LoadGenerator/InferenceServer.LoadGenerator.csproj \
    bench/peers/InferenceServer.Peers/InferenceServer.Peers.csproj; do
    dotnet build "$ROOT/$project" -c Release --nologo -v quiet >&2 || die "building $project failed"
done
SERVER=("$ROOT/src/InferenceServer/bin/Release/net10.0/inference-server")
LOADGEN=("$ROOT/bench/InferenceServer.LoadGenerator/bin/Release/net10.0/inference-loadgen")
PEERS=(dotnet "$ROOT/bench/peers/InferenceServer.Peers/bin/Release/net10.0/inference-peers.dll")
NODE_MODULES=$(bash "$ROOT/tests/fixtures/llamacpp/install.sh")

mkdir -p "$OUT/raw" "$WORK"
started=$(date +%s)
for config in $MODELS; do
    [[ -f "$config" ]] || die "no config file $config"
    name=$(basename "$config" .json)
    model=$WORK/$name
    raw=$OUT/raw/$name
    mkdir -p "$raw"
    echo "== $name: converting one Hugging Face folder for every engine" >&2
    "${SERVER[@]}" build-model --random-config "$config" --tokenizer "$ROOT/models/minicoder" --seed "$SEED" --format hf --output "$model/hf" --overwrite >&2
    "${SERVER[@]}" build-model --input "$model/hf" --output "$model/onnx" --overwrite >&2
    "${SERVER[@]}" build-model --input "$model/hf" --format gguf --output "$model/model.gguf" --overwrite >&2
    # The parameter count from the safetensors file (float32 data after the header), and the shape.
    node -e '
        const fs = require("fs");
        const [weights, config, out] = process.argv.slice(1);
        const head = Buffer.alloc(8), fd = fs.openSync(weights);
        fs.readSync(fd, head, 0, 8, 0);
        const c = JSON.parse(fs.readFileSync(config, "utf8"));
        const shape = `hidden ${c.hidden_size}, ${c.num_hidden_layers} layers, ${c.num_attention_heads} heads, ${c.num_key_value_heads} KV heads, ` +
            `intermediate ${c.intermediate_size}, vocab ${c.vocab_size}, float32`;
        fs.writeFileSync(out, JSON.stringify({ parameters: (fs.statSync(weights).size - 8 - Number(head.readBigInt64LE())) / 4, config: shape }));
    ' "$model/hf/model.safetensors" "$config" "$raw/model.json"

    # The load generator's prompts as token ids, for the engines it does not drive.
    "${PEERS[@]}" prompts --tokenizer "$model/onnx" --manifest "$MANIFEST" --prompt-tokens "$PROMPT_TOKENS" --output-tokens "$OUTPUT_TOKENS" \
        --levels "$LEVELS" --requests "$REQUESTS" --seed "$SEED" --out "$raw/prompts.json"

    # Each round runs every engine once, in the opposite order to the round before, so no engine
    # always meets the same part of a changing background load; the report keeps each engine's best.
    for round in $(seq 1 "$ROUNDS"); do
        engines=(ours llamacpp genai)
        (( round % 2 == 0 )) && engines=(genai llamacpp ours)
        dir=$raw/round-$round
        mkdir -p "$dir"
        for engine in "${engines[@]}"; do
            echo "== $name, round $round: $engine" >&2
            case $engine in
            ours)  # the load generator with our engine in its process
                "${LOADGEN[@]}" --target inprocess --model "$model/onnx" --workload concurrency --levels "$LEVELS" --requests "$REQUESTS" --duration 3600 \
                    --prompt-tokens "$PROMPT_TOKENS" --output-tokens "$OUTPUT_TOKENS" --seed "$SEED" --manifest "$MANIFEST" --threads "$THREADS" \
                    --context-length "$CONTEXT" --no-progress --out "$dir/ours" >/dev/null ;;
            llamacpp)
                node "$HERE/llamacpp.mjs" --node-modules "$NODE_MODULES" bench --model "$model/model.gguf" --prompts "$raw/prompts.json" \
                    --threads "$THREADS" --context-length "$CONTEXT" --out "$dir/llamacpp.json" ;;
            genai)
                "${PEERS[@]}" genai --model "$model/onnx" --prompts "$raw/prompts.json" --threads "$THREADS" --context-length "$CONTEXT" --out "$dir/genai.json" ;;
            esac
        done
    done
done

# Kept with the raw results, so `inference-peers report` can rewrite the report from them.
notes=$OUT/raw/notes.txt
{
    echo "Machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores; load average at the end $(cut -d' ' -f1-3 /proc/loadavg)."
    [[ -n "$NOTE" ]] && echo "$NOTE"
    echo "Compute threads per engine: $THREADS; KV cache per sequence: $CONTEXT tokens; float32 weights converted from one Hugging Face folder (seed $SEED)."
    echo "ours: the load generator's concurrency workload with the engine in its process (--threads $THREADS)."
    echo "llama.cpp: node-llama-cpp 3.22.1 (prebuilt CPU llama.cpp) on the GGUF build-model wrote; one context with a sequence per stream, which it batches together."
    echo "onnxruntime-genai: Microsoft.ML.OnnxRuntimeGenAI 0.18.0 on our model folder; one generator per stream, each on its own thread (no batching across generators)."
    echo "Whole run: $(( $(date +%s) - started )) s. Re-run: LEVELS=$LEVELS REQUESTS=$REQUESTS PROMPT_TOKENS=$PROMPT_TOKENS OUTPUT_TOKENS=$OUTPUT_TOKENS THREADS=$THREADS CONTEXT=$CONTEXT ROUNDS=$ROUNDS SEED=$SEED bench/peers/run.sh"
} >"$notes"
"${PEERS[@]}" report --raw "$OUT/raw" --out "$OUT" --title "Peers on $MACHINE: ours, llama.cpp and ONNX Runtime GenAI" --notes "$notes"
echo "wrote $OUT" >&2
cat "$OUT/report.md"
