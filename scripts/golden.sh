#!/usr/bin/env bash
# Regenerates the golden protobuf vectors of Tests/ZPCoreTests/Fixtures with protoc:
# for every line `name proto message` of golden.list, `protoc --encode=message proto < name.txtpb > name.bin`.
#   scripts/golden.sh           rewrite the .bin files
#   scripts/golden.sh --check   compare instead; exit 1 if any committed .bin differs
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
fixtures="$here/../Tests/ZPCoreTests/Fixtures"
check=0
[ "${1:-}" = "--check" ] && check=1
command -v protoc >/dev/null || { echo "golden.sh: protoc not found (make setup installs protobuf-compiler)" >&2; exit 2; }
cd "$fixtures"
tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT
status=0
count=0
while read -r name proto message; do
  [ -z "${name:-}" ] && continue
  case "$name" in \#*) continue ;; esac
  protoc -I. --encode="$message" "$proto" <"$name.txtpb" >"$tmp"
  count=$((count + 1))
  if [ "$check" = 1 ]; then
    if ! cmp -s "$tmp" "$name.bin"; then
      echo "golden.sh: $name.bin differs from protoc --encode=$message $proto < $name.txtpb" >&2
      status=1
    fi
  else
    cp "$tmp" "$name.bin"
  fi
done <golden.list
if [ "$check" = 1 ]; then
  [ "$status" = 0 ] && echo "golden.sh: $count vectors match protoc $(protoc --version | awk '{print $2}')"
else
  echo "golden.sh: wrote $count vectors with protoc $(protoc --version | awk '{print $2}')"
fi
exit "$status"
