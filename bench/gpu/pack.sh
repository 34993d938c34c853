#!/usr/bin/env bash
# Publishes what the GPU benchmark runs into one folder: the server (for build-model) and the load
# generator, self-contained for linux-x64 with ONNX Runtime's CUDA provider, so the GPU machine
# needs no .NET. Copy the folder there and run bench/gpu/run.sh with APP pointing at it.
#
#   bench/gpu/pack.sh /tmp/gpu-app
set -euo pipefail
dest=${1:?usage: bench/gpu/pack.sh DEST}
cd "$(dirname "$0")/../.."
for project in src/InferenceServer bench/InferenceServer.LoadGenerator; do
  dotnet publish "$project" -c Release -r linux-x64 --self-contained -p:OrtCuda=true -o "$dest" --nologo -v quiet
done
ls "$dest"/inference-server "$dest"/inference-loadgen "$dest"/libonnxruntime_providers_cuda.so
echo "published into $dest ($(du -sh "$dest" | cut -f1))"
