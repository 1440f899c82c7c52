#!/usr/bin/env bash
# Builds (once) and prints the path of a root filesystem folder for tests, demos and benchmarks.
# No registry: busybox from Debian's busybox-static, Debian ones with debootstrap from the machine's
# own configured mirror. Cached by name and version under $ZP_CACHE/rootfs; rebuilt only when the
# recipe version below changes. Usage: scripts/rootfs.sh busybox|debian|nginx [...]
set -euo pipefail
ZP_CACHE=${ZP_CACHE:-/var/cache/zeropod-swift}
ROOT="$ZP_CACHE/rootfs"
log() { printf '[rootfs] %s\n' "$*" >&2; }
die() { printf '[rootfs] error: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"
mkdir -p "$ROOT"
exec 8>"$ROOT/.lock"; flock 8

debian_uri() {
  local uri=""
  if compgen -G '/etc/apt/sources.list.d/*.sources' >/dev/null; then
    uri=$(awk '/^URIs:/ {for (i=2;i<=NF;i++) if ($i !~ /security/) {print $i; exit}}' /etc/apt/sources.list.d/*.sources)
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '/^deb / && $0 !~ /security/ {for (i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list)
  fi
  [ -n "$uri" ] || die "no Debian URI in the machine's apt sources"
  printf '%s\n' "$uri"
}

# Builds $1 with function $2 into a temporary folder, then renames it into place (atomic).
cached() {
  local dir="$ROOT/$1" build=$2
  if [ ! -f "$dir/.zp-complete" ]; then
    rm -rf "$dir.tmp" "$dir"
    log "building $1"
    "$build" "$dir.tmp"
    touch "$dir.tmp/.zp-complete"
    mv "$dir.tmp" "$dir"
  fi
  printf '%s\n' "$dir"
}

build_busybox() {
  local d=$1
  [ -x /bin/busybox ] || die "/bin/busybox missing (Debian package busybox-static)"
  mkdir -p "$d"/{bin,sbin,etc,proc,sys,dev,tmp,www,var/log,root}
  cp /bin/busybox "$d/bin/busybox"
  for app in $("$d/bin/busybox" --list); do
    [ -e "$d/bin/$app" ] || ln -s busybox "$d/bin/$app"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\nwww-data:x:33:33:www-data:/www:/bin/false\n' >"$d/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\nwww-data:x:33:\n' >"$d/etc/group"
  echo "zeropod busybox" >"$d/www/index.html"
  chmod 1777 "$d/tmp"
}

build_debian() {
  local d=$1
  debootstrap --variant=minbase bookworm "$d" "$(debian_uri)" >"$ROOT/debootstrap.log" 2>&1 \
    || { tail -n 20 "$ROOT/debootstrap.log" >&2; die "debootstrap failed (log: $ROOT/debootstrap.log)"; }
  printf '#!/bin/sh\nexit 101\n' >"$d/usr/sbin/policy-rc.d"; chmod +x "$d/usr/sbin/policy-rc.d"
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' >"$d/etc/apt/apt.conf.d/99zeropod"
  chroot "$d" apt-get clean
}

# Copies the cached Debian base and installs packages into it.
debian_with() {
  local d=$1; shift
  local base; base=$(cached debian-bookworm-v1 build_debian)
  cp -a "$base" "$d"; rm -f "$d/.zp-complete"
  cp /etc/resolv.conf "$d/etc/resolv.conf" 2>/dev/null || true
  mount -t proc proc "$d/proc"
  trap 'umount "'"$d"'/proc" 2>/dev/null || true' RETURN
  DEBIAN_FRONTEND=noninteractive chroot "$d" apt-get install -y -qq "$@" >"$ROOT/install.log" 2>&1 \
    || { tail -n 20 "$ROOT/install.log" >&2; die "apt-get install $* failed in $d (log: $ROOT/install.log)"; }
  chroot "$d" apt-get clean
}

build_nginx() {
  local d=$1
  debian_with "$d" nginx-light
  # Logs to stdio (container stdio is pipes the shim owns), run in the foreground.
  sed -i 's#access_log .*;#access_log /dev/stdout;#; s#error_log .*;#error_log stderr;#' "$d/etc/nginx/nginx.conf"
  grep -q '^daemon off;' "$d/etc/nginx/nginx.conf" || sed -i '1i daemon off;' "$d/etc/nginx/nginx.conf"
  sed -i 's/worker_processes auto;/worker_processes 2;/' "$d/etc/nginx/nginx.conf"
  echo "zeropod nginx" >"$d/var/www/html/index.html"
}

[ $# -gt 0 ] || die "usage: $0 busybox|debian|nginx [...]"
for name in "$@"; do
  case "$name" in
    busybox) cached busybox-v1 build_busybox ;;
    debian) cached debian-bookworm-v1 build_debian ;;
    nginx) cached nginx-v1 build_nginx ;;
    *) die "unknown rootfs '$name' (known: busybox, debian, nginx)" ;;
  esac
done
