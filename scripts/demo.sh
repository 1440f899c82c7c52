#!/usr/bin/env bash
# `make demo`: a container that scales to zero and comes back, on one machine, no Kubernetes.
#
# Starts a private containerd (2.x by default; DEMO_CONTAINERD=1.6 for Debian's) whose PATH holds our
# containerd-shim-zeropod-v2, runs a busybox web server that keeps a request counter in its own
# memory, in a network namespace joined to the host by a veth pair, with
# zeropod.ctrox.dev/scaledown-duration=3s. Then, DEMO_CYCLES times: waits until the shim checkpointed
# it (no process left), sends a real HTTP request from the host, and prints the checkpoint time,
# the request's time and the restore time. Everything it made is removed on exit, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

ZP_CACHE=${ZP_CACHE:-/var/cache/zeropod-swift}
CYCLES=${DEMO_CYCLES:-3}
SCALEDOWN=${DEMO_SCALEDOWN:-3s}
case "${DEMO_CONTAINERD:-2}" in
  2|2.x) CTRD_BIN="$ZP_CACHE/containerd2/usr/bin"; CTRD_NAME="containerd 2.x" ;;
  1.6) CTRD_BIN=/usr/bin; CTRD_NAME="containerd 1.6 (Debian)" ;;
  *) echo "demo: DEMO_CONTAINERD must be 2 or 1.6, not '$DEMO_CONTAINERD'" >&2; exit 2 ;;
esac

say() { printf '\033[1m[demo]\033[0m %s\n' "$*"; }
die() { printf '[demo] error: %s\n' "$*" >&2; exit 1; }
now_ms() { date +%s%3N; }

[ "$(id -u)" = 0 ] || die "run as root (it starts containerd and makes a network namespace)"
[ -x "$CTRD_BIN/containerd" ] || die "$CTRD_NAME not found in $CTRD_BIN (make setup installs it)"

say "building the shim (debug build)"
swift build --product containerd-shim-zeropod-v2 >/dev/null
BIN=$(swift build --show-bin-path)
ROOTFS=$(scripts/rootfs.sh busybox)

D=$(mktemp -d /tmp/zp-demo.XXXXXX)
NS="zp-demo-$$"
VH="zpdh$$"; VP="zpdp$$"
HOST_IP=10.79.0.1; POD_IP=10.79.0.2
SOCK="$D/c.sock"; CNS=zp-demo; ID=zp-demo-web
CTRD_PID=""
ctr() { "$CTRD_BIN/ctr" -a "$SOCK" -n "$CNS" "$@"; }

cleanup() {
  set +e
  if [ -n "$CTRD_PID" ]; then
    ctr task kill -s SIGKILL "$ID" >/dev/null 2>&1
    for _ in $(seq 1 100); do ctr task rm "$ID" >/dev/null 2>&1 && break; ctr task ls -q 2>/dev/null | grep -qx "$ID" || break; sleep 0.1; done
    ctr container rm "$ID" >/dev/null 2>&1
    kill "$CTRD_PID" 2>/dev/null; wait "$CTRD_PID" 2>/dev/null
  fi
  ip link del "$VH" 2>/dev/null
  ip netns del "$NS" 2>/dev/null
  rm -rf "$D"
  # ctr's cgroup for the namespace (/<namespace>/<id>; runc removed <id>): only when empty.
  for h in /sys/fs/cgroup/*/; do rmdir "$h$CNS" 2>/dev/null; done
  rmdir "/sys/fs/cgroup/$CNS" 2>/dev/null
  rmdir "/run/containerd/runc/$CNS" 2>/dev/null  # the shim's runc root for the namespace, empty by now
}
trap cleanup EXIT

# The pod's network namespace, joined to the host by a veth pair.
ip addr show 2>/dev/null | grep -q " $HOST_IP/" && die "$HOST_IP is already in use on this machine (another demo running?)"
ip netns add "$NS"
ip -n "$NS" link set lo up
ip link add "$VH" type veth peer name "$VP"
ip link set "$VP" netns "$NS"
ip addr add "$HOST_IP/30" dev "$VH"; ip link set "$VH" up
ip -n "$NS" addr add "$POD_IP/30" dev "$VP"; ip -n "$NS" link set "$VP" up

cat >"$D/config.toml" <<EOF
version = 2
root = "$D/root"
state = "$D/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime", "io.containerd.cri.v1.images"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
EOF
say "starting a private $CTRD_NAME with containerd-shim-zeropod-v2 on its PATH"
PATH="$BIN:$CTRD_BIN:/usr/local/sbin:$PATH" "$CTRD_BIN/containerd" --config "$D/config.toml" >"$D/containerd.log" 2>&1 &
CTRD_PID=$!
for _ in $(seq 1 300); do ctr version >/dev/null 2>&1 && break; sleep 0.1; done
ctr version >/dev/null 2>&1 || { tail -n 20 "$D/containerd.log" >&2; die "containerd did not come up"; }

# A web server whose only state is a counter in the shell's memory.
SERVER='n=0; while true; do n=$((n+1)); printf "HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\nrequests served by this process: %d\n" $((33+${#n})) $n | nc -l -p 8080 >/dev/null; done'
say "ctr run --runtime io.containerd.zeropod.v2 --annotation zeropod.ctrox.dev/scaledown-duration=$SCALEDOWN $ID"
ctr run -d --runtime io.containerd.zeropod.v2 \
  --annotation "zeropod.ctrox.dev/scaledown-duration=$SCALEDOWN" \
  --with-ns "network:/var/run/netns/$NS" --log-uri "file://$D/$ID.out" \
  --rootfs "$ROOTFS" "$ID" /bin/sh -c "$SERVER"

get() { curl -s --max-time 10 "http://$POD_IP:8080/"; }
body=""
for _ in $(seq 1 100); do body=$(get) && [ -n "$body" ] && break; sleep 0.2; done
[ -n "$body" ] || die "the container never answered"
say "GET http://$POD_IP:8080/ -> $body"

netns_inode=$(stat -L -c %i "/var/run/netns/$NS")
app_processes() {
  local n=0 p
  for p in /proc/[0-9]*; do
    [ "$(stat -L -c %i "$p/ns/net" 2>/dev/null)" = "$netns_inode" ] && n=$((n + 1))
  done
  echo "$n"
}
log_count() { grep -c "$1" "$D/containerd.log" 2>/dev/null || true; }
last_ms() { grep "$1" "$D/containerd.log" | tail -n 1 | grep -oE 'in [0-9.]+ ?ms' | grep -oE '[0-9.]+' || echo "?"; }

for cycle in $(seq 1 "$CYCLES"); do
  want=$cycle
  say "cycle $cycle: waiting $SCALEDOWN without traffic for the scale-down"
  ok=""
  for _ in $(seq 1 600); do
    if [ "$(log_count 'checkpointing done')" -ge "$want" ] && [ "$(app_processes)" = 0 ]; then ok=1; break; fi
    sleep 0.1
  done
  [ -n "$ok" ] || { tail -n 30 "$D/containerd.log" >&2; die "the container did not scale down"; }
  row=$(ctr task ls | awk -v id="$ID" '$1 == id {print $2, $3}')
  say "  SCALED_DOWN: checkpointed in $(last_ms 'checkpointing done') ms; no process of the app left on the host; containerd still sees: pid $row"
  t0=$(now_ms); body=$(get) || true; t1=$(now_ms)
  [ -n "$body" ] || { tail -n 30 "$D/containerd.log" >&2; die "the request after the scale-down failed"; }
  say "  GET -> \"$body\" in $((t1 - t0)) ms (restore took $(last_ms 'restored process') ms), app processes now: $(app_processes)"
done
say "done: $CYCLES scale-downs and restores; the counter kept counting because the process memory came back"
