#!/usr/bin/env bash
# Builds the server and the load generator (Release) and soaks the server: the load generator starts
# it on free loopback ports and drives it (see README.md here). Every argument goes to `soak`, e.g.
#   bench/soak/run.sh --duration 10m
#   bench/soak/run.sh --model models/local/tiny --max-batch 4 --cancel-fraction 0.5
#   bench/soak/run.sh --target http://127.0.0.1:8080 --grpc http://127.0.0.1:50051 --pid "$(pgrep -n inference-server)"
# Exit code: 0 passed, 2 a check failed (lost requests, KV blocks or requests left, RSS growth), 1 an error.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
dotnet build -c Release src/InferenceServer -v quiet -nologo
dotnet build -c Release bench/InferenceServer.LoadGenerator -v quiet -nologo
exec dotnet bench/InferenceServer.LoadGenerator/bin/Release/net10.0/inference-loadgen.dll soak \
  --server src/InferenceServer/bin/Release/net10.0/inference-server "$@"
