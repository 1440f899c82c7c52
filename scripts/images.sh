#!/usr/bin/env bash
# `make images`: OCI image archives of the installer and the manager (issue 13, item 4), built with
# umoci (Debian), nothing pushed. Usage: scripts/images.sh [installer] [manager]  (default: both).
# Prints one line per image: NAME REF ARCHIVE. Import into a node's containerd with
#   ctr -n k8s.io images import ARCHIVE
# (the image is named docker.io/zeropod-swift/NAME:dev, which is what kubelet asks for when a pod
# names zeropod-swift/NAME:dev; with the tag dev, not latest, kubelet does not try to pull it).
#
# The Swift binaries are release builds with the Swift runtime linked in (scripts/release-build.sh:
# `--static-swift-stdlib`, position-dependent): no Swift toolchain on the node or in the image.
# They still use glibc and the C libraries of their modules (libbpf, libelf, zlib, libstdc++), so
# each image carries the `ldd` closure of its programs from this (Debian 12) machine, loader included.
#   installer  /usr/local/bin/zeropod-installer, containerd-shim-zeropod-v2 beside it (what it
#              installs), /usr/local/sbin/criu (the project's CRIU 4.2.1 build, with its libraries),
#              and what the installer runs: ldd (+ bash), patchelf, systemctl (restart through the
#              host's systemd when /run/systemd is mounted).
#   manager    /usr/local/bin/zeropod-manager.
# The release build has a build folder of its own (.build-images, IMAGES_SCRATCH), so it neither
# waits for nor overwrites the debug build or `make bench-manager`'s release build.
# Cache: $ZP_CACHE/images/<name>-<key>.tar, key = sha256 of this script, release-build.sh, Package.swift, Sources/,
# the CRIU binary and the Swift version: unchanged inputs build nothing.
set -euo pipefail
ZP_CACHE=${ZP_CACHE:-/var/cache/zeropod-swift}
TAG=${IMAGE_TAG:-dev}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
OUT="$ZP_CACHE/images"
CRIU=${CRIU:-/usr/local/sbin/criu}
SCRATCH=${IMAGES_SCRATCH:-$root/.build-images}
log() { printf '[images] %s\n' "$*" >&2; }
die() { printf '[images] error: %s\n' "$*" >&2; exit 1; }
command -v umoci >/dev/null || die "umoci is missing (make setup installs it)"
command -v jq >/dev/null || die "jq is missing (make setup installs it)"
[ -x "$CRIU" ] || die "no CRIU at $CRIU (make setup builds it)"
mkdir -p "$OUT"
exec 9>"$OUT/.lock"; flock 9

names=("$@"); [ ${#names[@]} -gt 0 ] || names=(installer manager)
for n in "${names[@]}"; do case "$n" in installer|manager) ;; *) die "unknown image $n (installer|manager)" ;; esac; done

key=$( {
  cat "$0" "$here/release-build.sh" "$root/Package.swift"
  (cd "$root" && find Sources -type f -print0 | sort -z | xargs -0 sha256sum)
  sha256sum "$CRIU"
  swift --version 2>/dev/null
} | sha256sum | cut -c1-16)

products_for() {
  case "$1" in
    installer) echo zeropod-installer containerd-shim-zeropod-v2 ;;
    manager) echo zeropod-manager ;;
  esac
}

need_build=()
for n in "${names[@]}"; do [ -f "$OUT/$n-$key.tar" ] || need_build+=("$n"); done
if [ ${#need_build[@]} -gt 0 ]; then
  products=()
  for n in "${need_build[@]}"; do read -ra p <<<"$(products_for "$n")"; products+=("${p[@]}"); done
  started=$(date +%s)
  # Built by scripts/release-build.sh, as `make shim` and the benchmarks build them: position-dependent
  # (the shim's pages stay clean and shared between pods, decision 0035) and checked for full
  # Foundation/ICU in the shim (decision 0061); the shim these images install is the one measured.
  log "scripts/release-build.sh ${products[*]} (in $SCRATCH)"
  bin=$(RELEASE_SCRATCH=$SCRATCH bash "$here/release-build.sh" "${products[@]}") || die "release build of ${products[*]} failed"
  log "release builds took $(( $(date +%s) - started )) s"
fi

# copy_closure ROOTFS FILE...: each file's libraries (ldd), the loader included, at their paths.
copy_closure() {
  local rootfs=$1; shift
  local f lib
  for f in "$@"; do
    # (ldd itself is a script: "not a dynamic executable", nothing to copy)
    { ldd "$f" 2>/dev/null || true; } | awk '/=> \// {print $3} /^\t\/[^ ]+ \(/ {print $1}' | while read -r lib; do
      [ -e "$rootfs$lib" ] || { mkdir -p "$rootfs$(dirname "$lib")"; cp -L "$lib" "$rootfs$lib"; }
    done
  done
}

# install_swift BINARY DEST: a release binary without its DWARF (symbols stay, for backtraces).
install_swift() {
  install -m 0755 "$1" "$2"
  strip --strip-debug "$2"
}

# new_rootfs DIR: the merged-/usr skeleton of Debian 12 (so /lib/... and /usr/lib/... are one).
new_rootfs() {
  local r=$1
  mkdir -p "$r/usr/bin" "$r/usr/sbin" "$r/usr/lib" "$r/usr/lib64" "$r/usr/local/bin" "$r/usr/local/sbin" "$r/etc" \
    "$r/tmp" "$r/var/lib" "$r/var/tmp" "$r/root" "$r/run" "$r/proc" "$r/sys" "$r/dev"
  chmod 1777 "$r/tmp" "$r/var/tmp"; chmod 0700 "$r/root"
  ln -s usr/bin "$r/bin"; ln -s usr/sbin "$r/sbin"; ln -s usr/lib "$r/lib"; ln -s usr/lib64 "$r/lib64"
  printf 'root:x:0:0:root:/root:/bin/bash\n' >"$r/etc/passwd"
  printf 'root:x:0:\n' >"$r/etc/group"
}

# pack NAME ROOTFS ENTRYPOINT...: the OCI archive $OUT/NAME-$key.tar from ROOTFS.
pack() {
  local name=$1 rootfs=$2; shift 2
  local ref="zeropod-swift/$name:$TAG" work archive="$OUT/$name-$key.tar"
  work=$(mktemp -d "$OUT/.work-XXXXXX")
  umoci init --layout "$work/oci" >/dev/null
  umoci new --image "$work/oci:$TAG" >/dev/null
  umoci insert --image "$work/oci:$TAG" "$rootfs" / >/dev/null
  local entry=()
  for e in "$@"; do entry+=(--config.entrypoint "$e"); done
  umoci config --image "$work/oci:$TAG" --os linux --architecture amd64 --author zeropod-swift \
    --config.workingdir / --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    "${entry[@]}" --config.label "org.opencontainers.image.title=zeropod-swift $name" >/dev/null
  umoci gc --layout "$work/oci" >/dev/null
  # containerd names an imported image after this annotation (umoci only writes the tag). The CRI
  # plugin looks images up by their normalized name: the manifests' zeropod-swift/installer:dev is
  # docker.io/zeropod-swift/installer:dev to it.
  jq --arg ref "docker.io/$ref" '.manifests |= map(.annotations["io.containerd.image.name"] = $ref)' \
    "$work/oci/index.json" >"$work/index.json" && mv "$work/index.json" "$work/oci/index.json"
  tar --sort=name --owner=0 --group=0 --numeric-owner -C "$work/oci" -cf "$archive.tmp" .
  mv "$archive.tmp" "$archive"
  rm -rf "$work"
  log "$name: $ref, $(du -h "$archive" | cut -f1) archive, $(du -sh "$rootfs" | cut -f1) unpacked"
}

rootfs=""
trap '[ -z "$rootfs" ] || rm -rf "$rootfs"; rm -rf "$OUT"/.work-*' EXIT
for n in "${names[@]}"; do
  archive="$OUT/$n-$key.tar"
  if [ ! -f "$archive" ]; then
    rootfs=$(mktemp -d "$OUT/.rootfs-XXXXXX")
    new_rootfs "$rootfs"
    case "$n" in
      installer)
        install_swift "$bin/zeropod-installer" "$rootfs/usr/local/bin/zeropod-installer"
        install_swift "$bin/containerd-shim-zeropod-v2" "$rootfs/usr/local/bin/containerd-shim-zeropod-v2"
        install -m 0755 "$CRIU" "$rootfs/usr/local/sbin/criu"
        tools=(/usr/bin/bash /usr/bin/ldd /usr/bin/patchelf)
        command -v systemctl >/dev/null && tools+=("$(command -v systemctl)")
        for t in "${tools[@]}"; do cp -L "$t" "$rootfs/usr/bin/$(basename "$t")"; done
        ln -s bash "$rootfs/usr/bin/sh"
        copy_closure "$rootfs" "$rootfs/usr/local/bin/zeropod-installer" "$rootfs/usr/local/bin/containerd-shim-zeropod-v2" \
          "$rootfs/usr/local/sbin/criu" "${tools[@]}"
        ldconfig -r "$rootfs" 2>/dev/null || true
        pack installer "$rootfs" /usr/local/bin/zeropod-installer
        ;;
      manager)
        install_swift "$bin/zeropod-manager" "$rootfs/usr/local/bin/zeropod-manager"
        copy_closure "$rootfs" "$rootfs/usr/local/bin/zeropod-manager"
        ldconfig -r "$rootfs" 2>/dev/null || true
        pack manager "$rootfs" /usr/local/bin/zeropod-manager
        ;;
    esac
    rm -rf "$rootfs"; rootfs=""
  fi
  printf '%s %s %s\n' "$n" "zeropod-swift/$n:$TAG" "$archive"
done
