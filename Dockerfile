# The CPU image of the server: a self-contained linux-x64 publish on a small Ubuntu base, with
# the default model (models/minicoder) inside. Build and run from the repository root:
#   docker build -t inferenceserver:cpu .
#   docker run --rm -p 8080:8080 -p 50051:50051 inferenceserver:cpu
# Serve your own model folder instead: mount the folder that holds it on /models and name it,
#   docker run --rm -p 8080:8080 -p 50051:50051 -v "$PWD/models/local:/models:ro" inferenceserver:cpu --model /models/NAME
# (or -e INFERENCESERVER_MODEL=/models/NAME). Arguments after the image name go to `serve`;
# every setting also comes from INFERENCESERVER_* variables (serve --help lists them).
#
# Base images are build arguments whose defaults are Docker Hub's Ubuntu images, so a plain
# build pulls from no other registry. The build stage installs the .NET 10 SDK from Ubuntu's
# archive unless its image already has `dotnet`, so .NET's own SDK image works as BUILD_IMAGE.
# The runtime stage installs the libraries .NET's runtime-deps image holds, so RUNTIME_IMAGE may
# also be .NET's runtime-deps image for Ubuntu 24.04 (tag 10.0-noble). README, "Deployment",
# says where those two images come from.

ARG BUILD_IMAGE=ubuntu:26.04
ARG RUNTIME_IMAGE=ubuntu:24.04

FROM ${BUILD_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN if ! command -v dotnet >/dev/null; then \
      apt-get update \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates dotnet-sdk-10.0 \
      && rm -rf /var/lib/apt/lists/*; \
    fi
ENV DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
WORKDIR /src
# Restore from the project files alone first, so that a change to the code keeps this layer.
COPY Directory.Build.props Directory.Packages.props ./
COPY src/InferenceServer/InferenceServer.csproj src/InferenceServer/
COPY src/Server/InferenceServer.Server.csproj src/Server/
COPY src/Engine/InferenceServer.Engine.csproj src/Engine/
COPY src/Model/InferenceServer.Model.csproj src/Model/
COPY src/ModelBuilder/InferenceServer.ModelBuilder.csproj src/ModelBuilder/
COPY src/Tokenizer/InferenceServer.Tokenizer.csproj src/Tokenizer/
COPY src/Protocol/InferenceServer.Protocol.csproj src/Protocol/
RUN dotnet restore src/InferenceServer/InferenceServer.csproj -r linux-x64 -p:SelfContained=true
COPY src/ src/
RUN dotnet publish src/InferenceServer/InferenceServer.csproj -c Release -r linux-x64 --self-contained \
      --no-restore -o /app

FROM ${RUNTIME_IMAGE}
# What the self-contained server needs from the system: the C and C++ runtimes, OpenSSL (for
# --tls), zlib, time zones and CA certificates, as in .NET's runtime-deps image. No ICU: the
# server runs with InvariantGlobalization. curl is for HEALTHCHECK (below).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates curl libc6 libgcc-s1 libssl3t64 libstdc++6 tzdata zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 inference \
 && useradd --system --uid 10001 --gid inference --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin inference \
 && mkdir /models
WORKDIR /app
COPY --from=build /app /app
# The default model, 14 MB beside a 137 MB server: the image serves something as it is, and the
# server's default, models/minicoder, is relative to this folder. Mounting /models hides nothing.
COPY models/minicoder /app/models/minicoder
VOLUME ["/models"]
# All interfaces, from the environment rather than --host on the command line, so that both
# -e INFERENCESERVER_HOST and --host can still change it.
ENV INFERENCESERVER_HOST=0.0.0.0 \
    INFERENCESERVER_HTTP_PORT=8080 \
    INFERENCESERVER_GRPC_PORT=50051
EXPOSE 8080 50051
# The image has no other HTTP client, and the server has no probe command: curl, a few MB, reads
# the status of GET /health (200 while serving; 503 while loading, draining or faulted).
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD curl -fsS --max-time 4 -o /dev/null "http://127.0.0.1:${INFERENCESERVER_HTTP_PORT}/health" || exit 1
USER 10001:10001
ENTRYPOINT ["/app/inference-server", "serve"]
