#!/usr/bin/env bash
# `make bench`: builds (and caches) the workload root filesystems, builds the zpbench harness and
# runs it: cold start, checkpoint, restore → first correct response, image size and memory per
# workload under plain runc and under zeropod-swift (our shim in a private containerd 2.x), medians
# of BENCH_CYCLES cycles, plus a wrk steady-state run; then draws the chart.
# Prints figures, never asserts timings. Results go to bench-results/ (gitignored):
# summary.md, summary.csv, samples.csv, steady-state.csv, restore.png.
# Before the workloads it measures the node (busybox pods in a private containerd 1.6): shim
# memory beside containerd-shim-runc-v2 and shim start; `make bench-density` adds the density run.
# Environment: BENCH_WORKLOADS (default: all; `none` for the node measurements only), BENCH_CYCLES
# (5), BENCH_WRK_SECONDS (10), BENCH_DENSITY_PODS (0: no density run), BENCH_ARGS (more zpbench
# options, see `zpbench --help` in the folder scripts/release-build.sh prints).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (runc, CRIU, network namespaces)"

WORKLOADS=${BENCH_WORKLOADS:-busybox,nginx,mariadb,jvm,wordpress}
[ "$WORKLOADS" != none ] || WORKLOADS=""
DENSITY_PODS=${BENCH_DENSITY_PODS:-0}
CYCLES=${BENCH_CYCLES:-5}
WRK_SECONDS=${BENCH_WRK_SECONDS:-10}
RESULTS=${BENCH_RESULTS:-bench-results}

# busybox for the node measurements, whatever the workloads
recipes=$(printf '%s\n' busybox ${WORKLOADS//,/ } | sort -u | tr '\n' ' ')
log "root filesystems (cached under \${ZP_CACHE:-/var/cache/zeropod-swift}/rootfs): $recipes"
# shellcheck disable=SC2086
bash scripts/rootfs.sh $recipes >/dev/null

log "building zpbench and containerd-shim-zeropod-v2 (release, as nodes run it: scripts/release-build.sh)"
bindir=$(bash scripts/release-build.sh zpbench containerd-shim-zeropod-v2)
bin=$bindir/zpbench

mkdir -p "$RESULTS"
# zpbench's private containerds, sockets and netns have fixed names under /run (zpbench-containerd,
# zpbench-node, ...): two benchmarks at once on one machine pull each other's containerd away
# ("ctr: cannot access socket /run/zpbench-containerd/c.sock", seen 2026-12-07). One at a time: this
# script holds the lock; zpbench and what it starts do not inherit it (8>&-), so a leftover cannot keep it.
exec 8>/run/zpbench.lock
if ! flock -n 8; then
  log "another benchmark runs on this machine (lock /run/zpbench.lock): waiting for it"
  flock 8
fi
# shellcheck disable=SC2086
"$bin" --workloads "$WORKLOADS" --cycles "$CYCLES" --wrk-seconds "$WRK_SECONDS" --results "$RESULTS" \
  --shim-dir "$bindir" --density-pods "$DENSITY_PODS" ${BENCH_ARGS:-} 8>&-

# The chart needs matplotlib from Debian (python3-matplotlib, installed by scripts/setup.sh).
if [ "$(wc -l <"$RESULTS/samples.csv" 2>/dev/null || echo 0)" -le 1 ]; then
  log "no workload cycles: chart skipped"
elif /usr/bin/python3 -c 'import matplotlib' 2>/dev/null; then
  /usr/bin/python3 bench/plot.py "$RESULTS/samples.csv" "$RESULTS/restore.png"
  log "chart: $RESULTS/restore.png"
else
  log "no matplotlib for /usr/bin/python3: chart skipped (apt-get install python3-matplotlib)"
fi
log "results: $RESULTS/summary.md"
