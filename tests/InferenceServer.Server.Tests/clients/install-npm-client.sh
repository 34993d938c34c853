#!/usr/bin/env bash
# Installs one of the npm clients the server tests run against a live server, at pinned versions:
#   openai   the official OpenAI SDK (OpenAiSdkTests.cs runs openai-completions.mjs)
#   grpc-js  @grpc/grpc-js with @grpc/proto-loader (GrpcJsClientTests.cs runs grpc-js-client.mjs)
#
#   install-npm-client.sh NAME   -> prints ONE line: the folder holding node_modules/ (absolute path)
#
# Packages live in a cache folder outside the repository ($INFERENCESERVER_CACHE, else
# $XDG_CACHE_HOME/inferenceserver, else ~/.cache/inferenceserver; then npm-clients/NAME/npm-<hash>/,
# where <hash> names the pins, so changing them reinstalls). The install runs in a temp folder that is
# renamed into place when complete, under a lock, as tests/fixtures/tokenizer/oracle.sh does, so a
# killed run never leaves a half-installed folder that a later run would trust.
# Exit status: 0 on success; otherwise non-zero with the reason on stderr. stdout carries only the result.

set -euo pipefail

die() {
    echo "install-npm-client.sh: $*" >&2
    exit 1
}

# Exact versions: `npm view <package> version` when each test was written.
NAME=${1:-}
case "$NAME" in
    # openai's package.json asks for Node >= 22; the calls the test makes also run on Node 20 (checked on 20.20).
    openai) PACKAGES=(openai@7.55.0); CHECK=openai ;;
    grpc-js) PACKAGES=(@grpc/grpc-js@1.14.7 @grpc/proto-loader@0.8.1); CHECK=@grpc/grpc-js ;;
    *) die "usage: install-npm-client.sh openai|grpc-js" ;;
esac

for tool in node npm sha256sum; do
    command -v "$tool" >/dev/null 2>&1 || die "needs '$tool' on PATH (Node.js with npm; coreutils)"
done

source "$(dirname "${BASH_SOURCE[0]}")/../../fixtures/cache-root.sh"
ROOT=$CACHE_ROOT
mkdir -p "$ROOT/npm-clients/$NAME" || die "cannot create $ROOT/npm-clients/$NAME"
DIR=$(cd "$ROOT/npm-clients/$NAME" && pwd -P)

# One install at a time per cache folder (flock is Linux-only; without it renames still keep folders whole).
LOCKED=false
if command -v flock >/dev/null 2>&1; then
    exec 9>"$DIR/.lock"
    flock 9 || die "cannot lock $DIR/.lock"
    LOCKED=true
fi
if $LOCKED; then
    rm -rf "$DIR"/*.tmp.* 2>/dev/null || true
fi

SPEC_HASH=$(printf '%s\n' "${PACKAGES[@]}" | sha256sum | cut -c1-16)
NPM_DIR="$DIR/npm-$SPEC_HASH"
if [[ ! -f "$NPM_DIR/.complete" ]]; then
    tmp=$(mktemp -d "$DIR/npm.tmp.XXXXXX") && chmod 755 "$tmp"
    echo "install-npm-client.sh: installing ${PACKAGES[*]} into $NPM_DIR (once)" >&2
    # --ignore-scripts: these clients are plain JavaScript. npm's output goes to stderr: stdout is the result.
    if ! npm install --prefix "$tmp" --no-audit --no-fund --ignore-scripts --loglevel=error "${PACKAGES[@]}" 1>&2; then
        rm -rf "$tmp"
        die "npm install failed (it needs the npm registry to be reachable, or a warm npm cache)"
    fi
    [[ -f "$tmp/node_modules/$CHECK/package.json" ]] || { rm -rf "$tmp"; die "node_modules/$CHECK is missing after the install"; }
    touch "$tmp/.complete"
    rm -rf "$NPM_DIR"
    mv "$tmp" "$NPM_DIR"
fi

echo "$NPM_DIR"
