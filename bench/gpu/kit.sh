#!/usr/bin/env bash
# The GPU kit: everything the CUDA checks and the GPU benchmark run, for a machine with an NVIDIA
# GPU, python3 (torch with CUDA, transformers, grpcio) and no .NET, reached by transfers of at most
# 64 MiB each (the repository working tree included) and one run command.
#
#   bench/gpu/kit.sh prepare [DIR]   here: publishes the server, the load generator and the CUDA
#                                    checks self-contained for linux-x64 with ONNX Runtime's CUDA
#                                    provider into DIR (default /tmp/inference-kit), packs it as
#                                    tar.xz parts in .gpu-stage/pN/ and prints the transfer plan
#   bench/gpu/kit.sh plan            here: prints the transfer plan again and checks the parts fit
#   bench/gpu/kit.sh run [--dry-run] there, from the repository root: unpacks the parts, runs every
#                                    stage within the time budget, writes results under $OUT
#
# run's settings (environment): OUT (default /tmp/kit-out), BUDGET (seconds, default 450), SIZES
# ("125m 1b"), LEVELS (paged sweep, 1,8,64,256), DENSE_LEVELS (1,8,64), DURATION (seconds per
# level, 6), PROMPT_TOKENS and OUTPUT_TOKENS (128), AGREE_TOKENS (32), STAGES (any of "checks agree
# bench", all by default), PATHS ("paged dense"), DEVICE (cuda; cpu runs the CPU-capable stages
# with a dense float32 graph, to check the tooling on any machine), PYTHON, KIT_DIR (/tmp/kit).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SELF="$ROOT/bench/gpu/kit.sh"
STAGE_DIR="$ROOT/.gpu-stage"
LIMIT_MIB=${LIMIT_MIB:-62}    # what one transfer may carry, less a margin, in MiB
KIT_DIR=${KIT_DIR:-/tmp/kit}  # where the transfers copy the parts, on the GPU machine

die() { echo "kit.sh: $*" >&2; exit 2; }

# Bytes that travel with every transfer besides the part: tracked and untracked-not-ignored files,
# and shared/ where the checkout has one.
tree_bytes() {
  local tree shared=0
  tree=$(cd "$ROOT" && git ls-files -co --exclude-standard -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
  [ -d "$ROOT/shared" ] && shared=$(du -sb "$ROOT/shared" | cut -f1)
  echo $((tree + shared))
}

mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

# ---------------------------------------------------------------------------------------------
# prepare, plan (here)

publish() {
  local dest=$1 project
  rm -rf "$dest"
  mkdir -p "$dest"
  for project in src/InferenceServer bench/InferenceServer.LoadGenerator bench/gpu/CudaChecks; do
    echo "publishing $project"
    (cd "$ROOT" && dotnet publish "$project" -c Release -r linux-x64 --self-contained -p:OrtCuda=true -o "$dest" --nologo -v quiet) \
      || die "dotnet publish $project failed"
  done
  # What the GPU machine does not run: symbols, translated messages, TensorRT, the debugger's and
  # crash dumper's libraries.
  find "$dest" -name '*.pdb' -delete
  find "$dest" -mindepth 1 -maxdepth 1 -type d -exec sh -c 'ls "$1" | grep -qv "\.resources\.dll$" || rm -rf "$1"' _ {} \;
  rm -f "$dest"/libonnxruntime_providers_tensorrt.so "$dest"/createdump "$dest"/libmscordbi.so "$dest"/libmscordaccore.so
  if [ -d "$dest/runtimes" ]; then
    find "$dest/runtimes" -mindepth 1 -maxdepth 1 -type d ! -name linux-x64 -exec rm -rf {} +
  fi
  for program in inference-server inference-loadgen cuda-checks; do
    [ -x "$dest/$program" ] || die "$program is missing from $dest"
  done
  [ -f "$dest/libonnxruntime_providers_cuda.so" ] || die "ONNX Runtime's CUDA provider is missing from $dest"
  # Each program starts (the CPU suffices): catches a publish whose programs overwrote each other's files.
  "$dest/inference-server" --help >/dev/null || die "inference-server does not start"
  "$dest/inference-loadgen" --help >/dev/null || die "inference-loadgen does not start"
  "$dest/cuda-checks" --list >/dev/null || die "cuda-checks does not start"
  (cd "$ROOT" && git describe --always --dirty) >"$dest/KIT_COMMIT"
  echo "published into $dest: $(du -sh "$dest" | cut -f1)"
}

pack() {
  local src=$1 tree part_bytes id i=0 f
  tree=$(tree_bytes)
  part_bytes=$((LIMIT_MIB * 1048576 - tree))
  [ "$part_bytes" -ge $((8 * 1048576)) ] || die "the working tree ($(mib "$tree") MiB) leaves no room for parts under $LIMIT_MIB MiB"
  rm -rf "$STAGE_DIR"
  mkdir -p "$STAGE_DIR/all"
  echo "packing (xz -${XZ_LEVEL:-6}, parts of at most $(mib "$part_bytes") MiB: $LIMIT_MIB MiB less the working tree's $(mib "$tree") MiB)"
  tar -C "$src" -cf - . | xz "-${XZ_LEVEL:-6}" -T0 -c | split -b "$part_bytes" -d -a 2 - "$STAGE_DIR/all/kit.tar.xz." \
    || die "packing failed"
  id="$(cat "$src/KIT_COMMIT")-$(date -u +%Y%m%dT%H%M%SZ)"
  {
    echo "id $id"
    for f in "$STAGE_DIR"/all/kit.tar.xz.*; do
      echo "part $(basename "$f") $(stat -c %s "$f") $(sha256sum "$f" | cut -d' ' -f1)"
    done
  } >"$STAGE_DIR/all/kit.manifest"
  for f in "$STAGE_DIR"/all/kit.tar.xz.*; do
    i=$((i + 1))
    mkdir -p "$STAGE_DIR/p$i"
    mv "$f" "$STAGE_DIR/p$i/"
    cp "$STAGE_DIR/all/kit.manifest" "$STAGE_DIR/p$i/"
  done
  rm -rf "$STAGE_DIR/all"
}

plan() {
  local n tree i size total=0 fits=yes biggest=0 limit=$((64 * 1048576))
  n=$(find "$STAGE_DIR" -mindepth 1 -maxdepth 1 -type d -name 'p*' 2>/dev/null | wc -l)
  [ "$n" -gt 0 ] || die "nothing packed: run 'bench/gpu/kit.sh prepare' first"
  tree=$(tree_bytes)
  echo "kit $(awk '$1 == "id" { print $2 }' "$STAGE_DIR/p1/kit.manifest"): $n part(s); the working tree carries $(mib "$tree") MiB with each"
  for i in $(seq 1 "$n"); do
    size=$(du -cb "$STAGE_DIR/p$i" | tail -1 | cut -f1)
    total=$((total + size))
    [ "$size" -gt "$biggest" ] && biggest=$size
    [ $((size + tree)) -le "$limit" ] || fits=no
    echo "  p$i: $(mib "$size") MiB, with the tree $(mib $((size + tree))) MiB"
  done
  echo "  all parts: $(mib "$total") MiB"
  if [ "$fits" = yes ]; then
    echo "every transfer fits in 64 MiB (largest: $(mib $((biggest + tree))) MiB)"
  else
    echo "A TRANSFER DOES NOT FIT in 64 MiB: the working tree grew since prepare; run prepare again" >&2
  fi
  echo
  echo "Transfers, back to back (the machine goes back after 30 s idle); each is one run call:"
  for i in $(seq 1 $((n - 1))); do
    echo "  $i. carry [\".gpu-stage/p$i\"]  timeout_s 120  command: mkdir -p $KIT_DIR && cp .gpu-stage/p$i/* $KIT_DIR/ && ls -l $KIT_DIR"
  done
  echo "  $n. carry [\".gpu-stage/p$n\"]  timeout_s 480  command: mkdir -p $KIT_DIR && cp .gpu-stage/p$n/* $KIT_DIR/ && bash bench/gpu/kit.sh run"
  echo "Results come back from \$OUT: summary.md, summary.json, log.txt, results.md, results.json, results.tar.gz"
  [ "$fits" = yes ]
}

# ---------------------------------------------------------------------------------------------
# run (there)

now() { date +%s; }
log() { echo "[$(date -u +%H:%M:%S) +$(($(now) - START))s] $*" | tee -a "$LOG" >&2; }

# record NAME STATUS SECONDS NOTE: one line of the stage table, then the summary brought up to date.
record() {
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4//$'\t'/ }" >>"$RESULTS/stages.tsv"
  log "$1: $2 (${3}s) $4"
  summarize
}

# stage NAME CAP COMMAND...: runs COMMAND (a program, or "$SELF" _internal ...) under a time limit
# of CAP seconds or what the budget leaves; its output goes to logs/NAME.log and log.txt.
stage() {
  local name=$1 cap=$2 left limit started rc note
  shift 2
  left=$((DEADLINE - $(now)))
  if [ "$left" -lt "$RESERVE" ]; then
    record "$name" skipped 0 "time budget spent (${left}s left)"
    return 3
  fi
  limit=$((cap < left - 15 ? cap : left - 15))
  [ "$limit" -ge 5 ] || limit=5
  if [ "$DRY_RUN" = 1 ]; then
    log "$name: would run (limit ${limit}s): $*"
    record "$name" skipped 0 "dry run"
    return 0
  fi
  log "$name: starting (limit ${limit}s): $*"
  started=$(now)
  timeout -k 10 "$limit" "$@" >"$RESULTS/logs/$name.log" 2>&1
  rc=$?
  cat "$RESULTS/logs/$name.log" >>"$LOG"
  note=$(grep -v '^\s*$' "$RESULTS/logs/$name.log" | tail -1 | cut -c1-240)
  case $rc in
    0) record "$name" pass $(($(now) - started)) "$note" ;;
    124 | 137) record "$name" fail $(($(now) - started)) "timed out after ${limit}s; last line: $note" ;;
    *) record "$name" fail $(($(now) - started)) "exit $rc: $note" ;;
  esac
  return $rc
}

summarize() {
  "$PY" - "$RESULTS" <<'EOF' >/dev/null 2>>"$LOG"
import glob, json, os, sys
results = sys.argv[1]
stages = []
for line in open(os.path.join(results, "stages.tsv")):
    name, status, seconds, note = line.rstrip("\n").split("\t", 3)
    stages.append({"stage": name, "status": status, "seconds": int(seconds), "note": note})
env = json.load(open(os.path.join(results, "environment.json"))) if os.path.exists(os.path.join(results, "environment.json")) else {}
agreement = {}
for path in sorted(glob.glob(os.path.join(results, "agreement-*.json"))):
    report = json.load(open(path))
    for name, r in report["paths"].items():
        agreement[f"{report['name']} {name}"] = {k: r[k] for k in ("pass", "sequences", "tokens", "worst_margin", "worst_logprob_difference", "not_greedy", "logprob_off")}
counts = {s: sum(1 for x in stages if x["status"] == s) for s in ("pass", "fail", "skipped")}
json.dump({"environment": env, "counts": counts, "stages": stages, "agreement": agreement},
          open(os.path.join(results, "summary.json"), "w"), indent=2)
lines = [f"# GPU kit run: {env.get('gpu', 'unknown GPU')}", "",
         f"Kit {env.get('kit', '?')}, started {env.get('started', '?')}, budget {env.get('budget_seconds', '?')} s; "
         f"{counts['pass']} passed, {counts['fail']} failed, {counts['skipped']} skipped. "
         f"Commit the unpacked results.tar.gz under {env.get('results_folder', 'bench/results/<date>-<gpu>-cuda')}/.", "",
         "| stage | result | seconds | note |", "| --- | --- | ---: | --- |"]
lines += [f"| {s['stage']} | {s['status'].upper() if s['status'] == 'fail' else s['status']} | {s['seconds']} | {s['note'].replace('|', '/')} |" for s in stages]
lines.append("")
for path in sorted(glob.glob(os.path.join(results, "agreement-*.md"))) + [os.path.join(results, "results.md")]:
    if os.path.exists(path):
        lines += [open(path).read(), ""]
open(os.path.join(results, "summary.md"), "w").write("\n".join(lines))
EOF
  collect_out
}

# Copies what comes back into $OUT (at most 8 files): the summaries, the log, and everything as one tarball.
collect_out() {
  local f
  for f in summary.md summary.json results.md results.json; do
    [ -f "$RESULTS/$f" ] && cp "$RESULTS/$f" "$OUT/"
  done
  cp "$LOG" "$OUT/log.txt"
  tar -C "$RESULTS" -czf "$OUT/results.tar.gz.tmp" . 2>/dev/null && mv "$OUT/results.tar.gz.tmp" "$OUT/results.tar.gz"
}

# The CUDA 13 libraries ONNX Runtime's CUDA provider needs: first where this machine keeps them,
# then anywhere on the disk.
find_cuda_libraries() {
  local dirs=() lib found d
  for lib in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10; do
    found=""
    for d in /opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib /usr/local/cuda-13.0/targets/x86_64-linux/lib \
      /usr/local/cuda/lib64 /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib; do
      if [ -e "$d/$lib" ]; then found=$d; break; fi
    done
    if [ -z "$found" ]; then
      found=$(timeout 60 find / -xdev -name "$lib*" -not -path '/proc/*' 2>/dev/null | head -1)
      found=${found:+$(dirname "$found")}
    fi
    if [ -n "$found" ]; then
      log "$lib: $found"
      dirs+=("$found")
    else
      log "$lib: NOT FOUND"
    fi
  done
  printf '%s\n' "${dirs[@]}" | awk 'NF && !seen[$0]++' | paste -sd:
}

# The parts, from $KIT_DIR or from .gpu-stage/pN/ carried with this call, checked and unpacked into $APP.
unpack() {
  local manifest="" d name size sum file id
  for d in "$KIT_DIR" "$ROOT"/.gpu-stage/p*; do
    [ -f "$d/kit.manifest" ] && { manifest="$d/kit.manifest"; break; }
  done
  [ -n "$manifest" ] || { echo "no kit.manifest in $KIT_DIR or .gpu-stage/: were the parts transferred?"; return 1; }
  id=$(awk '$1 == "id" { print $2 }' "$manifest")
  if [ -f "$APP/.kit-id" ] && [ "$(cat "$APP/.kit-id")" = "$id" ]; then
    echo "kit $id already unpacked in $APP"
    return 0
  fi
  local parts=()
  while read -r _ name size sum; do
    file=""
    for d in "$KIT_DIR" "$ROOT"/.gpu-stage/p*; do
      [ -f "$d/$name" ] && { file="$d/$name"; break; }
    done
    [ -n "$file" ] || { echo "part $name of kit $id is missing (not in $KIT_DIR nor .gpu-stage/)"; return 1; }
    [ "$(stat -c %s "$file")" = "$size" ] || { echo "part $name has $(stat -c %s "$file") bytes, expected $size"; return 1; }
    [ "$(sha256sum "$file" | cut -d' ' -f1)" = "$sum" ] || { echo "part $name is damaged (sha256 differs)"; return 1; }
    parts+=("$file")
  done < <(awk '$1 == "part"' "$manifest")
  echo "kit $id: ${#parts[@]} part(s) present and intact"
  rm -rf "$APP"
  mkdir -p "$APP"
  if command -v xz >/dev/null; then
    cat "${parts[@]}" | xz -d -c | tar -C "$APP" -xf - || return 1
  else
    cat "${parts[@]}" | "$PY" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.stdin.buffer), sys.stdout.buffer, 1 << 20)' \
      | tar -C "$APP" -xf - || return 1
  fi
  echo "$id" >"$APP/.kit-id"
  echo "unpacked into $APP: $(du -sh "$APP" | cut -f1)"
}

# Internal: serve FOLDER, send the agreement prompts, stop the server.
agree_collect() {
  local folder=$1 out=$2 hf=$3 name=$4 server rc
  local http=$((18080 + RANDOM % 1000)) grpc=$((19080 + RANDOM % 1000))
  local device_args=()
  [ "$DEVICE" = cuda ] && device_args=(--device cuda)
  "$APP/inference-server" serve --model "$folder" "${device_args[@]}" --http-port "$http" --grpc-port "$grpc" \
    --max-batch 64 >"$RESULTS/logs/serve-$name.log" 2>&1 &
  server=$!
  trap 'kill -TERM $server 2>/dev/null' EXIT
  "$PY" "$ROOT/bench/gpu/agreement.py" collect --grpc "127.0.0.1:$grpc" --health "http://127.0.0.1:$http/health" \
    --hf "$hf" --out "$out" --max-tokens "$AGREE_TOKENS" --wait 240 &
  local client=$!
  # Stop waiting if the server dies before it answers.
  while kill -0 $client 2>/dev/null; do
    if ! kill -0 $server 2>/dev/null; then
      kill $client 2>/dev/null
      echo "the server exited early:"
      tail -20 "$RESULTS/logs/serve-$name.log"
      return 1
    fi
    sleep 1
  done
  wait $client
  rc=$?
  kill -TERM $server 2>/dev/null
  for _ in $(seq 1 20); do kill -0 $server 2>/dev/null || break; sleep 0.5; done
  kill -KILL $server 2>/dev/null
  trap - EXIT
  return $rc
}

# Internal: the dense and the paged folder of one size, built side by side.
build_pair() {
  local hf=$1 size=$2 precision dense_pid paged_pid rc=0
  precision=$([ "$DEVICE" = cuda ] && echo fp16 || echo fp32)
  "$APP/inference-server" build-model --input "$hf" --output "$WORK/dense-$size" --precision "$precision" --overwrite &
  dense_pid=$!
  if [[ " $PATHS " == *" paged "* ]]; then
    "$APP/inference-server" build-model --input "$hf" --output "$WORK/paged-$size" --graph paged --precision fp16 --overwrite &
    paged_pid=$!
    wait $paged_pid || { echo "paged build failed"; rc=1; }
  fi
  wait $dense_pid || { echo "dense build failed"; rc=1; }
  return $rc
}

wants() { [[ " $STAGES " == *" $1 "* ]]; }

# have PATH SIZE: whether that model folder was built; says so in the stage table when not.
have() {
  [ "$DRY_RUN" = 1 ] || [ -f "$WORK/$1-$2/genai_config.json" ] && return 0
  record "$1-$2" skipped 0 "no $1 folder for $2 (its build failed)"
  return 1
}

# wait_background NAME PID: waits for a background job within the budget, recording how it went.
wait_background() {
  local name=$1 pid=$2 started
  started=$(now)
  while kill -0 "$pid" 2>/dev/null && [ $((DEADLINE - $(now))) -ge "$RESERVE" ]; do sleep 1; done
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null
    record "$name" fail $(($(now) - started)) "not finished within the time budget"
    return 1
  fi
  cat "$RESULTS/logs/$name.log" >>"$LOG"
  if wait "$pid"; then
    record "$name" pass $(($(now) - started)) "$(tail -1 "$RESULTS/logs/$name.log")"
  else
    record "$name" fail $(($(now) - started)) "$(tail -1 "$RESULTS/logs/$name.log")"
    return 1
  fi
}

run() {
  DRY_RUN=0
  [ "${1:-}" = --dry-run ] && DRY_RUN=1
  START=$(now)
  BUDGET=${BUDGET:-450}
  RESERVE=${RESERVE:-60}
  DEADLINE=$((START + BUDGET))
  OUT=${OUT:-/tmp/kit-out}
  RESULTS=${RESULTS:-$KIT_DIR/results}
  WORK=${WORK:-$KIT_DIR/work}
  APP=${APP:-$KIT_DIR/app}
  DEVICE=${DEVICE:-cuda}
  SIZES=${SIZES:-"125m 1b"}
  LEVELS=${LEVELS:-1,8,64,256}
  DENSE_LEVELS=${DENSE_LEVELS:-1,8,64}
  DURATION=${DURATION:-6}
  PROMPT_TOKENS=${PROMPT_TOKENS:-128}
  OUTPUT_TOKENS=${OUTPUT_TOKENS:-128}
  AGREE_TOKENS=${AGREE_TOKENS:-32}
  STAGES=${STAGES:-"checks agree bench"}
  PATHS=${PATHS:-"paged dense"}
  [ "$DEVICE" = cpu ] && PATHS=dense  # the paged graph runs on CUDA only
  if [ -z "${PYTHON:-}" ]; then
    PYTHON=python3
    [ -x /opt/torch/.venv/bin/python3 ] && PYTHON=/opt/torch/.venv/bin/python3
  fi
  PY=$PYTHON
  export APP RESULTS WORK DEVICE PATHS PY AGREE_TOKENS ROOT
  # The load generator asks python3 where the standard library is (its prompts' source text).
  PATH="$(dirname "$(command -v "$PY")"):$PATH"
  export PATH
  cd "$ROOT" || exit 2
  rm -rf "$RESULTS"
  mkdir -p "$OUT" "$RESULTS/logs" "$WORK"
  LOG="$RESULTS/log.txt"
  : >"$LOG"
  : >"$RESULTS/stages.tsv"

  local gpu libs python_info kit=""
  gpu=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)
  log "GPU: ${gpu:-none found by nvidia-smi}; budget ${BUDGET}s; sizes $SIZES; stages $STAGES; paths $PATHS; device $DEVICE"
  if [ "$DEVICE" = cuda ]; then
    libs=$(find_cuda_libraries)
    export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    log "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  fi
  python_info=$("$PY" -c '
import importlib, platform
found = []
for name in ("torch", "transformers", "grpc", "numpy"):
    try:
        found.append(f"{name} {importlib.import_module(name).__version__}")
    except Exception as e:
        found.append(f"{name} missing ({type(e).__name__})")
print(f"python {platform.python_version()}: " + ", ".join(found))' 2>&1 | tail -1)
  log "$PY: $python_info"

  # The Hugging Face folders take a while for 1b (CPU only): made in the background from the start.
  local size
  declare -A hf_pids
  if wants agree || wants bench; then
    for size in $SIZES; do
      if [ "$DRY_RUN" = 1 ]; then
        log "would run: $PY bench/gpu/random_llama.py --size $size --out $WORK/hf-$size"
      else
        "$PY" bench/gpu/random_llama.py --size "$size" --out "$WORK/hf-$size" >"$RESULTS/logs/hf-$size.log" 2>&1 &
        hf_pids[$size]=$!
      fi
    done
  fi

  stage unpack 120 bash "$SELF" _unpack
  local unpacked=$?
  [ -f "$APP/.kit-id" ] && kit=$(cat "$APP/.kit-id")
  "$PY" - "$RESULTS/environment.json" "${gpu:-unknown}" "$python_info" "$kit" "$BUDGET" "$SIZES" "$DEVICE" "$START" <<'EOF'
import datetime, json, re, sys
path, gpu, python, kit, budget, sizes, device, start = sys.argv[1:]
name = gpu.split(",")[0].strip()
started = datetime.datetime.fromtimestamp(int(start), datetime.timezone.utc)
slug = "-".join(w.lower() for w in re.findall(r"[A-Za-z0-9]+", name) if w.lower() not in ("nvidia", "tesla")) or "gpu"
json.dump({"gpu": name, "gpu_details": gpu, "python": python, "kit": kit, "budget_seconds": int(budget), "sizes": sizes.split(),
           "device": device, "started": started.isoformat(timespec="seconds"),
           "results_folder": f"bench/results/{started:%Y-%m-%d}-{slug}-{device}"}, open(path, "w"), indent=2)
EOF
  summarize
  if [ "$unpacked" != 0 ]; then
    log "nothing runs without the kit"
    return 1
  fi

  if wants checks; then
    local require=()
    [ "$DEVICE" = cuda ] && require=(--require-cuda)
    stage cuda-checks 180 "$APP/cuda-checks" "${require[@]}"
  fi

  local path pairs=()
  for size in $SIZES; do
    wants agree || wants bench || break
    if [ "$DRY_RUN" = 0 ]; then
      wait_background "hf-$size" "${hf_pids[$size]}" || continue
    fi
    stage "build-$size" 300 bash "$SELF" _build "$WORK/hf-$size" "$size"

    if wants agree; then
      local collected=()
      for path in $PATHS; do
        have "$path" "$size" || continue
        stage "agree-$size-$path" 200 bash "$SELF" _collect "$WORK/$path-$size" "$RESULTS/collected-$size-$path.json" "$WORK/hf-$size" "$size-$path" \
          && collected+=(--path "$path" "$RESULTS/collected-$size-$path.json")
      done
      if [ ${#collected[@]} -gt 0 ]; then
        stage "agree-$size-check" 200 "$PY" bench/gpu/agreement.py check --hf "$WORK/hf-$size" "${collected[@]}" --name "$size" \
          --out "$RESULTS" --device "$DEVICE"
      fi
    fi

    if wants bench; then
      local levels max_batch count
      for path in $PATHS; do
        if [ "$path" = paged ]; then levels=$LEVELS; max_batch=256; else levels=$DENSE_LEVELS; max_batch=64; fi
        count=$(echo "$levels" | tr ',' '\n' | wc -l)
        have "$path" "$size" || continue
        stage "bench-$size-$path" $((count * (DURATION + 20) + 90)) "$APP/inference-loadgen" --target inprocess --device "$DEVICE" \
          --model "$WORK/$path-$size" --workload concurrency --levels "$levels" --prompt-tokens "$PROMPT_TOKENS" \
          --output-tokens "$OUTPUT_TOKENS" --duration "$DURATION" --max-batch "$max_batch" --no-progress --out "$RESULTS/ours-$size-$path"
        pairs+=(--"$path" "$size" "$RESULTS/ours-$size-$path/report.json")
      done
      stage "bench-$size-transformers" 240 "$PY" bench/gpu/hf_generate.py --model "$WORK/hf-$size" --out "$RESULTS/hf-$size.json" \
        --batches "$LEVELS" --prompt-tokens "$PROMPT_TOKENS" --output-tokens "$OUTPUT_TOKENS" --device "$DEVICE"
      pairs+=(--reference "$size" "$RESULTS/hf-$size.json")
      RESERVE=15 stage "compare" 60 "$PY" bench/gpu/compare.py "${pairs[@]}" --out "$RESULTS"
    fi
  done
  for pid in "${hf_pids[@]}"; do kill "$pid" 2>/dev/null; done
  log "done in $(($(now) - START))s; results in $RESULTS, copied to $OUT"
  summarize
  cat "$RESULTS/summary.md"
  grep -q $'\tfail\t' "$RESULTS/stages.tsv" && return 1
  return 0
}

case "${1:-}" in
  prepare)
    set -e
    dest=${2:-/tmp/inference-kit}
    publish "$dest"
    pack "$dest"
    echo
    plan
    ;;
  plan) plan ;;
  run) shift; run "$@" ;;
  _unpack) unpack ;;
  _build) shift; build_pair "$@" ;;
  _collect) shift; agree_collect "$@" ;;
  *) sed -n '2,19p' "$0"; exit 2 ;;
esac
