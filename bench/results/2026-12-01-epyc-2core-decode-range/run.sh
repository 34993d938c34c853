#!/bin/bash
# Alternates the build before ($BEFORE) and after ($AFTER) on the peer comparison's settings, both shapes.
for r in $(seq 1 ${ROUNDS:-2}); do
  for b in before after; do
    d=$AFTER; [ $b = before ] && d=$BEFORE
    L=$d/bench/InferenceServer.LoadGenerator/bin/Release/net10.0/inference-loadgen
    for m in llama-20m llama-125m; do
      $L --target inprocess --model $PEERS_WORK/$m/onnx --workload concurrency --levels 1,4,16 --requests 16 --duration 3600 --prompt-tokens 256 --output-tokens 64 \
        --threads 2 --context-length 512 --no-progress -o $OUT/$m-$b-$r > $OUT/$m-$b-$r.log 2>&1
      grep -E '^\| (1|4|16) stream' $OUT/$m-$b-$r.log | cut -d'|' -f2,7,8,11 | sed "s/^/$m $b $r /"
    done
  done
done
