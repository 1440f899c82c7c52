#!/usr/bin/env bash
# Builds products as a node runs them and prints the folder that holds them: release, the Swift
# runtime linked in (--static-swift-stdlib) and position-dependent (-no-pie), into .build-node.
# A position-dependent executable has no relocations to apply when it starts, so almost every page
# of the shim stays clean and is shared by all the shims of a node; a PIE with the Swift runtime as
# shared libraries dirties ~1 MiB per process applying them (docs/decisions/0035-shim-memory.md).
# Usage: scripts/release-build.sh PRODUCT... (default: containerd-shim-zeropod-v2)
set -euo pipefail
cd "$(dirname "$0")/.."
flags=(-c release --scratch-path .build-node --static-swift-stdlib -Xswiftc -Xclang-linker -Xswiftc -no-pie)
products=("$@")
[ ${#products[@]} -gt 0 ] || products=(containerd-shim-zeropod-v2)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for p in "${products[@]}"; do
  if ! swift build "${flags[@]}" --product "$p" >"$log" 2>&1; then
    cat "$log" >&2
    echo "release-build: swift build --product $p failed" >&2
    exit 1
  fi
done
swift build "${flags[@]}" --show-bin-path
