#!/usr/bin/env bash
# Builds and runs the libFuzzer targets of every hand-written decoder (Fuzz/, a package of its own):
#   FuzzProtobuf      ProtobufReader + the ttrpc Request/Response/Status/Any/Timestamp messages
#   FuzzTTRPC         the incremental ttrpc frame decoder
#   FuzzCRIU          CRIU RPC messages, the stats-dump image, zeropod's tmpfs copies file
#   FuzzAPI           the task API, task event, status and wake messages (ZPAPI)
#   FuzzProbeHTTP     the activator's probe classifier on HTTP/1.x (and anything else)
#   FuzzProbeGRPC     the activator's HTTP/2 frame walk and gRPC health check (HPACK via NIOHPACK)
#   FuzzNodeSettings  node.conf (NodeConfig)
#   FuzzAnnotations   pod annotations (ContainerConfig, Go durations and bools, ports-map)
#
# Usage: fuzz.sh [--seconds N | --runs N] [TARGET...]
#   --seconds N  run each target for N seconds (default 60; `make test` uses a few)
#   --runs N     run each target for exactly N inputs (`make fuzz-long`: 10 million)
# Targets are built with `swift build -c release -Xswiftc -sanitize=fuzzer,address` into
# .build-fuzz/ (cached; the first build takes minutes). Corpora live in .build-fuzz/corpus/<target>,
# seeded from the golden vectors of the test fixtures and a few hand-made inputs. Crash inputs land
# in fuzz-artifacts/<target>/. Prints executions and crashes per target; exits 1 if any crashed.
set -euo pipefail
mode=seconds
amount=60
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) mode=seconds; amount=$2; shift 2 ;;
    --runs) mode=runs; amount=$2; shift 2 ;;
    [0-9]*) mode=seconds; amount=$1; shift ;;  # the old form: fuzz.sh SECONDS
    Fuzz*) targets+=("$1"); shift ;;
    *) echo "fuzz.sh: unknown argument $1 (usage: fuzz.sh [--seconds N | --runs N] [TARGET...])" >&2; exit 2 ;;
  esac
done
all=(FuzzProtobuf FuzzTTRPC FuzzCRIU FuzzAPI FuzzProbeHTTP FuzzProbeGRPC FuzzNodeSettings FuzzAnnotations)
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out=.build-fuzz
mkdir -p "$out"

echo "fuzz.sh: building the fuzz targets (release, fuzzer + address sanitizer) into $out/spm"
build_log="$out/build.log"
# One -sanitize flag with both sanitizers: swiftc keeps only the last -sanitize= it is given, and
# SwiftPM's `--sanitize=fuzzer --sanitize=address` passes two (in no fixed order), which silently
# dropped libFuzzer's coverage instrumentation ("Is the code instrumented for coverage?").
# --disable-build-manifest-caching: the project is a path dependency of Fuzz/, and SwiftPM's cached
# build manifest does not see source files added to it since (a merge that added files to
# ZPActivator then failed "cannot find type" here while the normal build passed).
if ! swift build -c release --package-path Fuzz --scratch-path "$out/spm" --disable-build-manifest-caching \
     -Xswiftc -sanitize=fuzzer,address >"$build_log" 2>&1; then
  grep -E "error:" "$build_log" | head -n 20 >&2 || tail -n 40 "$build_log" >&2
  echo "fuzz.sh: build failed (log: $build_log)" >&2
  exit 1
fi
bin="$out/spm/release"

hex() { printf "\\x$(printf %02x "$1")"; }
be32() { hex $(($1 >> 24 & 255)); hex $(($1 >> 16 & 255)); hex $(($1 >> 8 & 255)); hex $(($1 & 255)); }

seed() {
  local c="$out/corpus" f n i=1
  mkdir -p "$c"/{FuzzProtobuf,FuzzTTRPC,FuzzCRIU,FuzzAPI,FuzzProbeHTTP,FuzzProbeGRPC,FuzzNodeSettings,FuzzAnnotations}
  for f in Tests/ZPCoreTests/Fixtures/*.bin; do
    n=$(basename "$f" .bin)
    cp "$f" "$c/FuzzProtobuf/seed-$n"
    cp "$f" "$c/FuzzAPI/seed-$n"
    # chunk-size byte, then the vector as a request frame on stream i, then an empty data frame.
    { hex $((i * 7 % 256)); be32 "$(stat -c %s "$f")"; be32 $((2 * i + 1)); hex 1; hex 0; cat "$f"
      be32 0; be32 $((2 * i + 1)); hex 3; hex 5; } >"$c/FuzzTTRPC/seed-$n"
    i=$((i + 1))
  done
  # A header announcing more than 4 MiB.
  { hex 3; be32 $((4 * 1024 * 1024 + 1)); be32 1; hex 1; hex 0; } >"$c/FuzzTTRPC/seed-oversized"
  for f in Tests/ZPCheckpointTests/Fixtures/*.bin; do cp "$f" "$c/FuzzCRIU/seed-$(basename "$f" .bin)"; done
  # HTTP/1.x: the first byte is where the prefix check cuts.
  printf '\x20GET /healthz HTTP/1.1\r\nHost: 10.0.0.5:8080\r\nUser-Agent: kube-probe/1.31\r\nAccept: */*\r\n\r\n' \
    >"$c/FuzzProbeHTTP/seed-kube-probe"
  printf '\x10GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: curl/8.5\r\n\r\n' >"$c/FuzzProbeHTTP/seed-curl"
  printf '\x05\x16\x03\x01\x02\x00\x01\x00' >"$c/FuzzProbeHTTP/seed-tls"
  # HTTP/2: mode byte (built + health check pseudo-headers, Huffman), cut byte, then extra headers.
  printf '\x07\xffuser-agent\x00grpc-go/1.65.0\x00te\x00trailers' >"$c/FuzzProbeGRPC/seed-health"
  printf '\x0f\x80:authority\x0010.1.2.3:9000' >"$c/FuzzProbeGRPC/seed-health-continuation"
  printf '\x01\xc0:path\x00/shop.v1.Cart/Add\x00content-type\x00application/grpc' >"$c/FuzzProbeGRPC/seed-other-call"
  printf '\x00\xff\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x00' >"$c/FuzzProbeGRPC/seed-raw-settings"
  cat >"$c/FuzzNodeSettings/seed-example" <<'EOF'
# /etc/zeropod/node.conf
probe-source-addresses = 10.0.0.5, fd00::5, ::ffff:192.168.1.2
learn-probe-sources = true
loopback-is-activity = false
open-connections-are-activity = true
criu-path = /opt/zeropod/bin/criu
runc-path = runc
state-dir = /var/lib/zeropod-swift
run-dir = /run/zeropod-swift
lazy-restore = auto
EOF
  printf 'bpf-pin-dir = /sys/fs/bpf/zeropod\r\nrun-dir = /run/a-very-long-run-directory-name\n' >"$c/FuzzNodeSettings/seed-refused"
  # Annotations: entries split at NUL, first byte = key index (0 scaledown-duration, 1 container-names,
  # 2 ports-map, 6 probe-buffer-size, 12 wake-group, 13 container-name, 14 container-type).
  printf '\x001m30s\x00\x02web=80,8080;db=5432\x00\x0dweb\x00\x0ccounter\x00\x061024\x00\x0econtainer' \
    >"$c/FuzzAnnotations/seed-pod"
  printf '\x000\x00\x01web,db\x00\x07500ms\x00\x0eSandbox' >"$c/FuzzAnnotations/seed-off"
}

run() { # target
  local name="$1" log="$out/fuzz-$1.log" art="fuzz-artifacts/$1/"
  mkdir -p "$art"
  local before; before=$(find "$art" -type f | wc -l)
  local limit=(-max_total_time="$amount")
  [ "$mode" = runs ] && limit=(-runs="$amount")
  local dict=()
  [ -f "Fuzz/Dictionaries/$name.dict" ] && dict=(-dict="Fuzz/Dictionaries/$name.dict")
  local status=0 start; start=$(date +%s)
  # Swift's own crash handler would read memory that ASan then reports; libFuzzer prints the trace.
  SWIFT_BACKTRACE=enable=no "$bin/$name" "${limit[@]}" "${dict[@]}" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
    -artifact_prefix="$art" "$out/corpus/$name" >"$log" 2>&1 || status=$?
  local execs; execs=$(awk '/stat::number_of_executed_units:/ {print $2}' "$log" | tail -n1)
  local after; after=$(find "$art" -type f | wc -l)
  local crashes=$((after - before))
  [ "$status" != 0 ] && [ "$crashes" = 0 ] && crashes=1
  if [ -z "$execs" ]; then  # no libFuzzer statistics: the binary did not fuzz (e.g. a Swift main ran instead)
    echo "fuzz.sh: $name printed no libFuzzer statistics (log $log)" >&2
    return 1
  fi
  printf 'fuzz.sh: %-16s %6s s  executions %-10s crashes %s  corpus %s  (log %s)\n' \
    "$name" "$(($(date +%s) - start))" "${execs:-?}" "$crashes" "$(ls "$out/corpus/$name" | wc -l)" "$log"
  if [ "$crashes" != 0 ]; then
    grep -E "ERROR|Fatal error|failed|Test unit written|#[4-6] " "$log" | head -n 8 >&2 || true
    return 1
  fi
}

seed
failed=0
for t in "${targets[@]}"; do run "$t" || failed=1; done
exit "$failed"
