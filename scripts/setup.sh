#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian 12 machine, as root. Idempotent:
# a second run only checks. Expensive artefacts (CRIU build, containerd 2.x) are cached by
# version under $ZP_CACHE (outside the clone), so a fresh clone on the same machine reuses them.
#
# Nothing here names a mirror: the Debian URI is read from the machine's own apt sources.
set -euo pipefail

ZP_CACHE=${ZP_CACHE:-/var/cache/zeropod-swift}
CRIU_VERSION=${CRIU_VERSION:-4.2.1}
CRIU_PATCH_LEVEL=zp15           # bump when scripts/criu/*.patch or the build options change
# CRIU caches what it learns about the kernel (kdat: ~40 ms of probing per request) in
# $CRIU_RUNDIR/criu.kdat, and only when that folder is a tmpfs (so the cache dies with the boot).
# Debian's CRIU uses /run, which is a tmpfs on a normal node but not on every machine (not on this
# testbed's); we build with a folder of its own and mount a small tmpfs there when needed (below).
CRIU_RUNDIR=/run/criu
CONTAINERD2_SERIES=${CONTAINERD2_SERIES:-2.}
here=$(cd "$(dirname "$0")" && pwd)
log() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (it installs packages and mounts bpffs)"
mkdir -p "$ZP_CACHE"
exec 9>"$ZP_CACHE/.setup.lock"; flock 9

# ---------------------------------------------------------------- Debian packages
PACKAGES=(
  # build and BPF
  build-essential pkg-config clang llvm libbpf-dev libnl-3-dev libnl-route-3-dev bpftool libelf-dev zlib1g-dev
  # runtime pieces
  runc containerd iproute2 ethtool iptables procps psmisc util-linux curl
  # golden protobuf vectors
  protobuf-compiler
  # CRIU build dependencies (testbed.md)
  protobuf-c-compiler libprotobuf-c-dev libprotobuf-dev libnet1-dev libcap-dev python3-protobuf
  libbsd-dev uuid-dev libgnutls28-dev libnftables-dev libaio-dev asciidoc-base xmlto
  # workloads, tools for tests and benchmarks
  debootstrap busybox-static wrk dpkg-dev xz-utils
  # benchmarks: javac for the JVM workload (bench/jvm), matplotlib for the chart (bench/plot.py)
  openjdk-17-jdk-headless python3-matplotlib
  # ZPScaleDownTests run a real Python HTTP server inside the pod netns
  python3
  # Kubernetes pieces (testbed.md): CNI for containerd's CRI plugin, Prometheus + promtool for the
  # manager's metrics tests
  containernetworking-plugins prometheus
  # the installer (issue 13) sets CRIU's RUNPATH to its bundled libraries; a venv for the
  # manifest schema validator; umoci and jq build the installer and manager images (make images)
  patchelf python3-venv umoci jq
  # migration (issue 16): the manager compresses image archives with libzstd (CZstd)
  libzstd-dev
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Packages with services (prometheus) must not start them: tests start their own on loopback.
  made_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod 0755 /usr/sbin/policy-rc.d; made_policy=1
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
fi

# ---------------------------------------------------------------- private apt config for sid
source "$(dirname "${BASH_SOURCE[0]}")/lib-apt.sh"
SID_APT="$ZP_CACHE/apt-sid"
sid_apt() {
  local uri; uri=$(debian_uri)
  mkdir -p "$SID_APT/lists/partial" "$SID_APT/archives/partial"
  printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s sid main\ndeb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s sid main\n' "$uri" "$uri" >"$SID_APT/sources.list"
  local opts=(-o "Dir::Etc::SourceList=$SID_APT/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$SID_APT/lists" -o "Dir::Cache::Archives=$SID_APT/archives"
    -o APT::Architecture=amd64 -o Acquire::Languages=none -o APT::Sandbox::User=root)
  if [ ! -f "$SID_APT/.updated" ] || [ -n "$(find "$SID_APT/.updated" -mmin +1440 2>/dev/null)" ]; then
    log "updating the private apt lists for sid"
    if ! apt-get "${opts[@]}" update -qq >/dev/null 2>"$SID_APT/update.err"; then
      # sid may be signed by a newer archive key than this machine's keyring holds. Signature checking
      # is never turned off: take the newest debian-archive-keyring from the machine's own (verified)
      # sources and try once more, else stop with the reason.
      log "signature check failed for sid (see $SID_APT/update.err); updating debian-archive-keyring from the machine's own sources"
      apt-get update -qq >/dev/null 2>&1 || true
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --only-upgrade debian-archive-keyring >/dev/null 2>&1 || true
      if ! apt-get "${opts[@]}" update -qq >/dev/null 2>"$SID_APT/update.err"; then
        cat "$SID_APT/update.err" >&2
        die "cannot verify Debian sid's signature with /usr/share/keyrings/debian-archive-keyring.gpg (above); install a debian-archive-keyring that carries sid's current signing key, then rerun"
      fi
    fi
    touch "$SID_APT/.updated"
  fi
  SID_OPTS=("${opts[@]}")
}

# ---------------------------------------------------------------- CRIU
CRIU_CACHE="$ZP_CACHE/criu-$CRIU_VERSION-$CRIU_PATCH_LEVEL"
build_criu() {
  sid_apt
  local src="$ZP_CACHE/criu-src"; rm -rf "$src"; mkdir -p "$src"
  local ver
  ver=$(apt-cache "${SID_OPTS[@]}" showsrc criu 2>/dev/null | awk '/^Version:/ {print $2}' | grep "^$CRIU_VERSION-" | head -n1 || true)
  [ -n "$ver" ] || ver=$(apt-cache "${SID_OPTS[@]}" showsrc criu 2>/dev/null | awk '/^Version:/ {print $2}' | grep "^$CRIU_VERSION" | head -n1 || true)
  local want="criu"; [ -n "$ver" ] && want="criu=$ver"
  log "downloading CRIU source ($want) from sid"
  (cd "$src" && apt-get "${SID_OPTS[@]}" source --download-only "$want" >/dev/null 2>&1) || true
  local tarball; tarball=$(ls "$src"/criu_"$CRIU_VERSION"*.orig.tar.* 2>/dev/null | head -n1 || true)
  [ -n "$tarball" ] || die "CRIU $CRIU_VERSION source not found in sid (got: $(ls "$src"))"
  tar -C "$src" -xf "$tarball"
  local dir; dir=$(find "$src" -maxdepth 1 -mindepth 1 -type d -name 'criu*' | head -n1)
  shopt -s nullglob
  for p in "$here"/criu/*.patch; do
    log "applying $(basename "$p")"
    patch -d "$dir" -p1 --forward <"$p" >/dev/null
  done
  log "building CRIU $CRIU_VERSION (about a minute on 2 cores)"
  # A lean CRIU (docs/decisions/0035-shim-memory.md): a scaled-down container keeps an idle
  # `criu swrk` worker for its restore, so every library and relocation costs each such pod. No
  # GnuTLS (TLS page server) and no libnftables (nft network lock): zeropod uses neither (the
  # network lock is skipped); a pkg-config wrapper hides libnftables from CRIU's feature check.
  # The final link is position-dependent (no relocations at start): an idle worker keeps ~0.25 MiB
  # private instead of ~0.9 MiB. LDFLAGS goes to that link only, the parasite blobs are built before.
  printf '#!/bin/sh\ncase " $* " in *" libnftables "*) exit 1 ;; esac\nexec pkg-config "$@"\n' >"$src/pkg-config"
  chmod +x "$src/pkg-config"
  local criu_make=(make -C "$dir" RUNDIR="$CRIU_RUNDIR" NO_GNUTLS=1 PKG_CONFIG="$src/pkg-config")
  { "${criu_make[@]}" -j"$(nproc)" criu && rm -f "$dir/criu/criu" && "${criu_make[@]}" LDFLAGS=-no-pie criu; } >"$src/build.log" 2>&1 \
    || { tail -n 40 "$src/build.log" >&2; die "CRIU build failed (log: $src/build.log)"; }
  mkdir -p "$CRIU_CACHE.tmp"
  install -m 0755 "$dir/criu/criu" "$CRIU_CACHE.tmp/criu"
  rm -rf "$CRIU_CACHE"; mv "$CRIU_CACHE.tmp" "$CRIU_CACHE"
  rm -rf "$src"
}
[ -x "$CRIU_CACHE/criu" ] || build_criu
if ! cmp -s "$CRIU_CACHE/criu" /usr/local/sbin/criu 2>/dev/null; then
  install -m 0755 "$CRIU_CACHE/criu" /usr/local/sbin/criu
fi
/usr/local/sbin/criu --version | grep -q "Version: $CRIU_VERSION" || die "installed CRIU is not $CRIU_VERSION"

# ---------------------------------------------------------------- containerd 2.x
CTRD2_LINK="$ZP_CACHE/containerd2"
if [ ! -x "$CTRD2_LINK/usr/bin/containerd" ]; then
  sid_apt
  ver=$(apt-cache "${SID_OPTS[@]}" show containerd 2>/dev/null | awk '/^Version:/ {print $2}' | grep "^$CONTAINERD2_SERIES" | head -n1 || true)
  [ -n "$ver" ] || die "no containerd $CONTAINERD2_SERIES* package in sid"
  dl="$ZP_CACHE/containerd-$ver.dl"; rm -rf "$dl"; mkdir -p "$dl"
  log "downloading containerd $ver from sid"
  (cd "$dl" && apt-get "${SID_OPTS[@]}" download "containerd=$ver" >/dev/null)
  prefix="$ZP_CACHE/containerd-$ver"; rm -rf "$prefix"
  dpkg -x "$dl"/containerd_*.deb "$prefix"
  rm -rf "$dl"
  ln -sfn "$prefix" "$CTRD2_LINK"
fi
"$CTRD2_LINK/usr/bin/containerd" --version >/dev/null || die "containerd 2.x in $CTRD2_LINK does not run"

# ---------------------------------------------------------------- kubectl (sid, pinned)
# The machine may carry another kubectl (a cloud SDK build, or a 1.32 "dispatcher"): the tests use
# this one, unpacked into the cache, by its path ($ZP_CACHE/kubectl/usr/bin/kubectl).
KUBECTL_VERSION=${KUBECTL_VERSION:-1.36.4+ds-1}
KUBECTL_LINK="$ZP_CACHE/kubectl"
if [ ! -x "$KUBECTL_LINK/usr/bin/kubectl" ] || [ "$(readlink "$KUBECTL_LINK")" != "$ZP_CACHE/kubectl-$KUBECTL_VERSION" ]; then
  sid_apt
  dl="$ZP_CACHE/kubectl-$KUBECTL_VERSION.dl"; rm -rf "$dl"; mkdir -p "$dl"
  log "downloading kubectl $KUBECTL_VERSION from sid"
  (cd "$dl" && apt-get "${SID_OPTS[@]}" download "kubectl=$KUBECTL_VERSION" >/dev/null) || die "kubectl $KUBECTL_VERSION not found in sid"
  prefix="$ZP_CACHE/kubectl-$KUBECTL_VERSION"; rm -rf "$prefix"
  dpkg -x "$dl"/kubectl_*.deb "$prefix"
  rm -rf "$dl"
  ln -sfn "$prefix" "$KUBECTL_LINK"
fi
"$KUBECTL_LINK/usr/bin/kubectl" version --client >/dev/null 2>&1 || die "kubectl in $KUBECTL_LINK does not run"

# ---------------------------------------------------------------- Python tools from PyPI (pinned)
# pinned_venv NAME VERSION REQUIREMENT: a venv $ZP_CACHE/NAME-VERSION with REQUIREMENT installed,
# built in a .tmp folder and moved into place only when pip succeeded (so the folder's presence
# means a complete install), linked as $ZP_CACHE/NAME.
pinned_venv() {
  local name=$1 version=$2 requirement=$3 venv="$ZP_CACHE/$1-$2"
  if [ ! -d "$venv" ]; then
    log "installing $requirement into $venv"
    rm -rf "$venv.tmp"
    /usr/bin/python3 -m venv "$venv.tmp"
    "$venv.tmp/bin/pip" install -q "$requirement" || die "pip install $requirement failed"
    mv "$venv.tmp" "$venv"
    # a venv records its own path: recreate the scripts' shebangs for the final location
    sed -i "1s|$venv.tmp|$venv|" "$venv"/bin/* 2>/dev/null || true
  fi
  ln -sfn "$venv" "$ZP_CACHE/$name"
}

# kubernetes-validate: validates the kustomize output (config/) against the Kubernetes schemas it
# bundles (offline).
KV_VERSION=${KV_VERSION:-1.37.0}
pinned_venv kubernetes-validate "$KV_VERSION" "kubernetes-validate==$KV_VERSION"
"$ZP_CACHE/kubernetes-validate/bin/kubernetes-validate" --version >/dev/null \
  || die "kubernetes-validate in $ZP_CACHE/kubernetes-validate-$KV_VERSION does not run"

# grpcio: the CRI test bed's gRPC probes (scripts/cri/grpc-probe.py), a real gRPC client (C-core)
# that, like kubelet's grpc-go, waits for the server's SETTINGS before it sends HEADERS.
GRPCIO_VERSION=${GRPCIO_VERSION:-1.85.1}
pinned_venv grpcio "$GRPCIO_VERSION" "grpcio==$GRPCIO_VERSION"
"$ZP_CACHE/grpcio/bin/python" -c 'import grpc' || die "grpcio in $ZP_CACHE/grpcio-$GRPCIO_VERSION does not import"

# ---------------------------------------------------------------- kernel filesystems
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
mountpoint -q /sys/kernel/tracing 2>/dev/null || mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
# CRIU's kernel-feature cache (see CRIU_RUNDIR above): it must sit on a tmpfs.
mkdir -p "$CRIU_RUNDIR"
if [ "$(stat -f -c %T "$CRIU_RUNDIR")" != tmpfs ]; then
  mount -t tmpfs -o size=1m,mode=0700 criu-kdat "$CRIU_RUNDIR"
fi

# ---------------------------------------------------------------- check
if ! out=$(/usr/local/sbin/criu check 2>&1); then
  printf '%s\n' "$out" >&2; die "criu check failed"
fi
log "ok: criu $CRIU_VERSION ($CRIU_CACHE), containerd 2.x at $CTRD2_LINK ($("$CTRD2_LINK/usr/bin/containerd" --version | awk '{print $3}')), $(containerd --version | awk '{print $3}') from Debian, kubectl $KUBECTL_VERSION, bpffs mounted, CRIU kdat cache on tmpfs $CRIU_RUNDIR"
