#!/usr/bin/env bash
# What mixing LoRA adapters costs a server: one base (models/configs/llama-20m.json, random weights,
# adapter inputs on all seven projections) with three random rank-16 adapters, served on loopback;
# the same concurrency load (8 streams, prompts of 128 tokens, 64 new) sent to the plain base, to one
# adapter, and to the three adapters in turn request by request (--model-name a1,a2,a3), in
# alternating runs, so that a machine shared with other work slows every case alike.
# usage: bench/adapters/mix.sh [ROUNDS [SECONDS]]   (from the repository root; results under bench/results/)
set -euo pipefail
rounds=${1:-4}
seconds=${2:-15}
work=$(mktemp -d)
out=bench/results/$(date -u +%Y%m%d-%H%M%S)-adapter-mix
mkdir -p "$out"
dotnet build src/InferenceServer -c Release -v q > /dev/null
dotnet build bench/InferenceServer.LoadGenerator -c Release -v q > /dev/null
server=src/InferenceServer/bin/Release/net10.0/inference-server
loadgen=bench/InferenceServer.LoadGenerator/bin/Release/net10.0/inference-loadgen

"$server" build-model --random-config models/configs/llama-20m.json --tokenizer models/minicoder --lora-targets all --output "$work/base"
for seed in 1 2 3; do
  python3 bench/adapters/random_peft.py models/configs/llama-20m.json "$work/peft-a$seed" "$seed"
  "$server" build-model --lora-input "$work/peft-a$seed" --base "$work/base" --name "a$seed"
done

http=18311 grpc=18312
"$server" serve --model "$work/base" --http-port $http --grpc-port $grpc --max-batch 8 --log-level warning > "$out/serve.log" 2>&1 &
pid=$!
trap 'kill $pid 2> /dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:$http/health > /dev/null && break; sleep 0.2; done

cases=(base a1 a1,a2,a3)
for round in $(seq "$rounds"); do
  for k in 0 1 2; do
    case=${cases[$(((round + k) % 3))]}
    name="r$round-${case//,/-}"
    "$loadgen" --target grpc://127.0.0.1:$grpc --workload concurrency --levels 8 --duration "$seconds" \
      --tokenizer "$work/base" --model-name "$case" --no-progress --out "$out/$name" > "$out/$name.txt" 2>&1
    echo "$round $case $(grep '^| 8 streams' "$out/$name.txt")" | tee -a "$out/summary.txt"
  done
done
