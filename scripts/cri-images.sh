#!/usr/bin/env bash
# Builds (once, cached by content) the CRI test bed's images as one-layer OCI archives (layout +
# index.json, uncompressed layer), for `ctr -n k8s.io images import` — no registry on these machines.
#   pause    a static C program (scripts/cri/pause.c, gcc -static): the pod sandbox image
#   busybox  the busybox rootfs folder of scripts/rootfs.sh: the workload image
# Usage: scripts/cri-images.sh pause|busybox...  Prints one line per image: NAME ARCHIVE.
# Cache: $ZP_CACHE/cri-images/<name>-<key>.tar, key = sha256 of this script, the source and the
# rootfs folder's listing (path, size, mtime).
set -euo pipefail
ZP_CACHE=${ZP_CACHE:-/var/cache/zeropod-swift}
here=$(cd "$(dirname "$0")" && pwd)
OUT="$ZP_CACHE/cri-images"
die() { printf '[cri-images] error: %s\n' "$*" >&2; exit 1; }
mkdir -p "$OUT"
exec 9>"$OUT/.lock"; flock 9

sha() { sha256sum "$1" | cut -d' ' -f1; }

# pack NAME REF ROOTFS CMD-JSON: writes $OUT/NAME-KEY.tar from the folder ROOTFS.
pack() {
  local name=$1 ref=$2 rootfs=$3 cmd=$4 key=$5
  local archive="$OUT/$name-$key.tar"
  if [ ! -f "$archive" ]; then
    local work; work=$(mktemp -d "$OUT/.work-XXXXXX")
    trap 'rm -rf "'"$work"'"' RETURN
    mkdir -p "$work/blobs/sha256"
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$rootfs" \
      --exclude=./.zp-complete -cf "$work/layer.tar" .
    local layer layer_size config config_size manifest manifest_size
    layer=$(sha "$work/layer.tar"); layer_size=$(stat -c %s "$work/layer.tar")
    mv "$work/layer.tar" "$work/blobs/sha256/$layer"
    printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":%s,"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
      "$cmd" "$layer" >"$work/config.json"
    config=$(sha "$work/config.json"); config_size=$(stat -c %s "$work/config.json")
    mv "$work/config.json" "$work/blobs/sha256/$config"
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
      "$config" "$config_size" "$layer" "$layer_size" >"$work/manifest.json"
    manifest=$(sha "$work/manifest.json"); manifest_size=$(stat -c %s "$work/manifest.json")
    mv "$work/manifest.json" "$work/blobs/sha256/$manifest"
    printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
      "$manifest" "$manifest_size" "$ref" "${ref##*:}" >"$work/index.json"
    printf '{"imageLayoutVersion":"1.0.0"}' >"$work/oci-layout"
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$work" -cf "$archive.tmp" oci-layout index.json blobs
    mv "$archive.tmp" "$archive"
  fi
  printf '%s %s %s\n' "$name" "$ref" "$archive"
}

for name in "$@"; do
  case "$name" in
    pause)
      key=$(cat "$0" "$here/cri/pause.c" | sha256sum | cut -c1-16)
      if [ ! -f "$OUT/pause-$key.tar" ]; then
        root=$(mktemp -d "$OUT/.pause-XXXXXX")
        gcc -static -O2 -o "$root/pause" "$here/cri/pause.c" || die "gcc -static pause.c failed (libc6-dev)"
        strip "$root/pause"
        pack pause "zeropod-swift.test/pause:$key" "$root" '["/pause"]' "$key"
        rm -rf "$root"
      else
        pack pause "zeropod-swift.test/pause:$key" /nonexistent '["/pause"]' "$key"
      fi
      ;;
    busybox)
      rootfs=$("$here/rootfs.sh" busybox)
      key=$( { cat "$0"; (cd "$rootfs" && find . -printf '%p %s %T@ %l\n' | sort); } | sha256sum | cut -c1-16)
      pack busybox "zeropod-swift.test/busybox:$key" "$rootfs" '["/bin/httpd","-f","-p","8080","-h","/www"]' "$key"
      ;;
    *) die "unknown image $name (pause|busybox)" ;;
  esac
done
