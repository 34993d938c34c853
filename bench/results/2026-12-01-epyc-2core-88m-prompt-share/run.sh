#!/bin/bash
# Alternates the build before ($BEFORE) and after ($AFTER): the peers' one-wave 4 and 16 streams on
# the 88M fp32 model, IDE typing on the 88M int4 model in both FIM orders, the default model at 1 and 8 streams.
for r in $(seq 1 ${ROUNDS:-2}); do
  for b in before after; do
    d=$AFTER; [ $b = before ] && d=$BEFORE
    L=$d/bench/InferenceServer.LoadGenerator/bin/Release/net10.0/inference-loadgen
    for n in 4 16; do
      $L --target inprocess --model $M88_FP32 --levels $n --requests 16 --threads 2 --prompt-tokens 256 --output-tokens 64 --context-length 512 --no-progress -o $OUT/wave$n-$b-$r > $OUT/wave$n-$b-$r.log 2>&1
      echo "wave $n $b $r: $(grep -E "^\| $n stream" $OUT/wave$n-$b-$r.log)"
    done
    for o in prefix-suffix-middle suffix-prefix-middle; do
      $L --target inprocess --model $M88_INT4-$o --workload ide --duration 20 --no-progress -o $OUT/ide-$o-$b-$r > $OUT/ide-$o-$b-$r.log 2>&1
      echo "ide $o $b $r: $(grep -E '^\| 4 sessions' $OUT/ide-$o-$b-$r.log) $(grep -o 'iterations p50.*' $OUT/ide-$o-$b-$r.log)"
    done
    $L --target inprocess --model $AFTER/models/minicoder --levels 1,8 --duration 6 --no-progress -o $OUT/mini-$b-$r > $OUT/mini-$b-$r.log 2>&1
    echo "minicoder $b $r:"; grep -E '^\| (1|8) stream' $OUT/mini-$b-$r.log
  done
done
