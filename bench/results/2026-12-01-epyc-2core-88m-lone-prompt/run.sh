#!/bin/bash
# Alternates the build before ($BEFORE) and after ($AFTER): one stream on the 88M fp32
# model, then IDE typing on the 88M int4 model in both FIM orders.
for r in $(seq 1 ${ROUNDS:-2}); do
  for b in before after; do
    d=$AFTER; [ $b = before ] && d=$BEFORE
    L=$d/bench/InferenceServer.LoadGenerator/bin/Release/net10.0/inference-loadgen
    $L --target inprocess --model $M88_FP32 --levels 1 --threads 2 --prompt-tokens 256 --output-tokens 64 --duration 10 --context-length 512 --no-progress -o $OUT/one-$b-$r > $OUT/one-$b-$r.log 2>&1
    echo "one $b $r: $(grep -E '^\| 1 stream' $OUT/one-$b-$r.log)"
    for o in prefix-suffix-middle suffix-prefix-middle; do
      $L --target inprocess --model $M88_INT4-$o --workload ide --duration 20 --no-progress -o $OUT/ide-$o-$b-$r > $OUT/ide-$o-$b-$r.log 2>&1
      echo "ide $o $b $r: $(grep -E '^\| 4 sessions' $OUT/ide-$o-$b-$r.log)"
    done
  done
done
