#!/usr/bin/env bash
# Builds products as a node runs them and prints the folder that holds them: release, the Swift
# runtime linked in (--static-swift-stdlib) and position-dependent (-no-pie), into .build-node.
# A position-dependent executable has no relocations to apply when it starts, so almost every page
# of the shim stays clean and is shared by all the shims of a node; a PIE with the Swift runtime as
# shared libraries dirties ~1 MiB per process applying them (docs/decisions/0035-shim-memory.md).
# Usage: scripts/release-build.sh PRODUCT... (default: containerd-shim-zeropod-v2)
# RELEASE_SCRATCH: the build folder (default .build-node; scripts/images.sh passes its own, so the
# binaries in the images are built exactly as these, with the same check below).
set -euo pipefail
cd "$(dirname "$0")/.."
flags=(-c release --scratch-path "${RELEASE_SCRATCH:-.build-node}" --static-swift-stdlib -Xswiftc -Xclang-linker -Xswiftc -no-pie)
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
bin=$(swift build "${flags[@]}" --show-bin-path)
# The shim imports FoundationEssentials, never full Foundation: full Foundation brings ICU's data and
# FoundationInternationalization (+48 MB of executable, +0.45 MiB of PSS per pod; decision 0061).
# A file of the shim's modules (or a package product they use) that imports Foundation fails here,
# where it shows, not in a debug build.
if [[ " ${products[*]} " == *" containerd-shim-zeropod-v2 "* ]]; then
  command -v nm >/dev/null || { echo "release-build: nm (binutils) is missing: run make setup" >&2; exit 1; }
  foundation=$(nm "$bin/containerd-shim-zeropod-v2" | grep -c -e ' icudt' -e ' \$s10Foundation' || true)
  if [ "$foundation" != 0 ]; then
    echo "release-build: containerd-shim-zeropod-v2 links full Foundation ($foundation symbols of Foundation" \
      "or ICU): import FoundationEssentials in the shim's modules (docs/decisions/0061-shim-without-foundation.md)" >&2
    exit 1
  fi
fi
echo "$bin"
