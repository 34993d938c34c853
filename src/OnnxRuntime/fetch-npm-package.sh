#!/usr/bin/env bash
# Fetches one npm package tarball with `npm pack` (npm checks the registry's integrity hash),
# checks it against the SHA-512 pinned in the build, and unpacks the named members (all of it
# when none are named) into DEST.
# DEST is written through a temporary folder and renamed, so an interrupted fetch never
# leaves a half-unpacked package that a later build would trust.
#   fetch-npm-package.sh NAME@VERSION SHA512 DEST [MEMBER ...]
set -euo pipefail
spec=${1:?package spec}; want=${2:?sha512}; dest=${3:?destination}; shift 3
[ -f "$dest/.complete" ] && exit 0
command -v npm >/dev/null || { echo "error: npm is needed to fetch $spec (install Node.js)" >&2; exit 1; }
parent=$(dirname "$dest"); mkdir -p "$parent"
work=$(mktemp -d "$parent/.fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "fetching $spec into $dest"
(cd "$work" && npm pack --silent "$spec" >/dev/null)
tgz=$(ls "$work"/*.tgz)
got=$(sha512sum "$tgz" | cut -d' ' -f1)
if [ "$got" != "$want" ]; then
  echo "error: $spec: SHA-512 mismatch (expected $want, got $got)" >&2; exit 1
fi
mkdir "$work/unpacked"
tar -xzf "$tgz" -C "$work/unpacked" "$@"
touch "$work/unpacked/.complete"
rm -rf "$dest"
mv "$work/unpacked" "$dest"
