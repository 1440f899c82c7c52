#!/usr/bin/env bash
# Builds and runs the libFuzzer targets of ZPCore for SECONDS each (default 60):
#   protobuf  ProtobufReader + the ttrpc Request/Response/Status/Any/Timestamp messages (Fuzz/ProtobufDecoderFuzz.swift)
#   ttrpc     the incremental ttrpc frame decoder (Fuzz/TTRPCFrameFuzz.swift)
# Each target is ZPCore's sources plus one entry file, compiled with `swiftc -sanitize=fuzzer,address`
# into .build-fuzz/. Corpora live in .build-fuzz/corpus/<target>, seeded from the golden protobuf
# vectors (Tests/ZPCoreTests/Fixtures/*.bin; framed for the ttrpc target). Crash inputs land in
# fuzz-artifacts/<target>/. Prints executions and crashes per target; exits 1 if any target crashed.
set -euo pipefail
seconds="${1:-60}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out=.build-fuzz
mkdir -p "$out"
swiftc="${SWIFTC:-swiftc}"
mapfile -t core_sources < <(find Sources/ZPCore -name '*.swift' | sort)

build() { # name entry-file
  local bin="$out/fuzz-$1"
  local newest; newest=$(ls -t "${core_sources[@]}" "$2" "$0" | head -n1)
  if [ ! -x "$bin" ] || [ "$newest" -nt "$bin" ]; then
    echo "fuzz.sh: building $bin"
    "$swiftc" -sanitize=fuzzer,address -parse-as-library -O -use-ld=lld -module-name "ZPFuzz_$1" \
      "${core_sources[@]}" "$2" -o "$bin"
  fi
}

hex() { printf "\\x$(printf %02x "$1")"; }
be32() { hex $(($1 >> 24 & 255)); hex $(($1 >> 16 & 255)); hex $(($1 >> 8 & 255)); hex $(($1 & 255)); }

seed() {
  local pb="$out/corpus/protobuf" tt="$out/corpus/ttrpc" f n i=1
  mkdir -p "$pb" "$tt"
  for f in Tests/ZPCoreTests/Fixtures/*.bin; do
    n=$(basename "$f" .bin)
    cp "$f" "$pb/seed-$n"
    # chunk-size byte, then the vector as a request frame on stream i, then an empty data frame.
    { hex $((i * 7 % 256)); be32 "$(stat -c %s "$f")"; be32 $((2 * i + 1)); hex 1; hex 0; cat "$f"
      be32 0; be32 $((2 * i + 1)); hex 3; hex 5; } >"$tt/seed-$n"
    i=$((i + 1))
  done
  # A header announcing more than 4 MiB, and a frame split across the chunk boundary.
  { hex 3; be32 $((4 * 1024 * 1024 + 1)); be32 1; hex 1; hex 0; } >"$tt/seed-oversized"
}

run() { # name
  local name="$1" log="$out/fuzz-$1.log" art="fuzz-artifacts/$1/"
  mkdir -p "$art"
  local before; before=$(find "$art" -type f | wc -l)
  local status=0
  # Swift's own crash handler would read memory that ASan then reports; libFuzzer prints the trace.
  SWIFT_BACKTRACE=enable=no "$out/fuzz-$name" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
    -artifact_prefix="$art" "$out/corpus/$name" >"$log" 2>&1 || status=$?
  local execs; execs=$(awk '/stat::number_of_executed_units:/ {print $2}' "$log" | tail -n1)
  local after; after=$(find "$art" -type f | wc -l)
  local crashes=$((after - before))
  [ "$status" != 0 ] && [ "$crashes" = 0 ] && crashes=1
  printf 'fuzz.sh: %-9s %8s s  executions %-10s crashes %s  corpus %s  (log %s)\n' \
    "$name" "$seconds" "${execs:-?}" "$crashes" "$(ls "$out/corpus/$name" | wc -l)" "$log"
  if [ "$crashes" != 0 ]; then
    grep -E "ERROR|Fatal error|failed|Test unit written" "$log" | head -n 5 >&2 || true
    return 1
  fi
}

build protobuf Fuzz/ProtobufDecoderFuzz.swift
build ttrpc Fuzz/TTRPCFrameFuzz.swift
seed
failed=0
run protobuf || failed=1
run ttrpc || failed=1
exit "$failed"
