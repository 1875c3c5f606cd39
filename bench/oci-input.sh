#!/usr/bin/env bash
# Bundle creation from a container image against --rootfs of the same tree,
# side by side in one run: wall time, CPU time, peak memory.
#
#   bench/oci-input.sh [WORKDIR]        (default: a temp dir in /var/tmp)
#
# The tree is real: this machine's own /usr/bin, /usr/sbin, /usr/libexec,
# /usr/lib/x86_64-linux-gnu and /etc (about 1.2 GB). It is packed once
# (tar, numeric owners, xattrs), unpacked for --rootfs, and imported into a
# private podman store (`podman import`, one layer) that `podman save`
# writes as an OCI archive (gzip layer) and a docker archive (plain layer).
# Needs root (podman, reading all of /etc), podman, skopeo, GNU time.
# Prints a Markdown table for BENCHMARKS.md. A benchmark, not a test.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-$(mktemp -d /var/tmp/didymos-bench-oci.XXXXXX)}
mkdir -p "$work"
podman=(podman --root "$work/storage" --runroot "$work/run" --storage-driver overlay)
cleanup() {
  "${podman[@]}" rmi -a -f >/dev/null 2>&1 || true
  umount --lazy "$work/storage/overlay" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --release --bin didymos >/dev/null
bin=target/release/didymos
bundles/make-dev-pki.sh "$work/pki" >/dev/null

members=(usr/bin usr/sbin usr/libexec usr/lib/x86_64-linux-gnu etc)
# The parent directories first: a layer lists every directory it uses.
tar -C / --numeric-owner --xattrs --xattrs-include='*' -cf "$work/rootfs.tar" \
  --no-recursion usr usr/lib --recursion "${members[@]}" 2>/dev/null || true
mkdir -p "$work/rootfs"
tar -C "$work/rootfs" --numeric-owner --xattrs --xattrs-include='*' -xpf "$work/rootfs.tar"
"${podman[@]}" import "$work/rootfs.tar" localhost/bench:1 >/dev/null
"${podman[@]}" save --format oci-archive -o "$work/image.oci.tar" localhost/bench:1 >/dev/null 2>&1
"${podman[@]}" save --format docker-archive -o "$work/image.docker.tar" localhost/bench:1 >/dev/null 2>&1
storage="containers-storage:[overlay@$work/storage+$work/run]localhost/bench:1"

bytes=$(du -sb --apparent-size "$work/rootfs" | cut -f1)
files=$(find "$work/rootfs" -type f | wc -l)
layer=$(tar -tvf "$work/image.oci.tar" | awk '$3 > max {max = $3} END {print max}')

# Warm the page cache: every input is read from memory.
cat "$work/rootfs.tar" "$work/image.oci.tar" "$work/image.docker.tar" >/dev/null
find "$work/rootfs" -type f -print0 | xargs -0 cat >/dev/null

measure() { # label, input args...
  local label=$1; shift
  rm -f "$work/out.raucb"
  sync
  /usr/bin/time -f "%e %M %U %S" -o "$work/time" "$bin" bundle create "$@" --output "$work/out.raucb" \
    --cert "$work/pki/signing.pem" --key "$work/pki/signing.key" --intermediate "$work/pki/intermediate-ca.pem" \
    --compatible bench --version 1 >"$work/out" 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  read -r secs rss user sys <"$work/time"
  local digest
  digest=$(awk '$1 == "image" {print substr($2, 1, 12)}' "$work/out")
  printf '| %s | %s s | %s s | %s MiB | %s MB | `%s…` |\n' "$label" "$secs" \
    "$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.1f", u + s }')" "$((rss / 1024))" \
    "$(($(stat -c %s "$work/out.raucb") / 1000000))" "$digest"
}

echo
echo "CPU: $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $(nproc) cores;" \
  "sha_ni in /proc/cpuinfo: $(grep -qw sha_ni /proc/cpuinfo && echo yes || echo no)."
echo "Load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)."
echo "Tree: ${members[*]}: $files regular files, $((bytes / 1000000)) MB; the OCI archive's gzip layer is $((layer / 1000000)) MB."
echo
echo "| input | wall time | CPU time | peak RSS | bundle | image digest |"
echo "|---|---|---|---|---|---|"
measure '`--rootfs DIR` (the tree unpacked)' --rootfs "$work/rootfs"
measure '`--rootfs rootfs.tar`' --rootfs "$work/rootfs.tar"
measure '`--oci oci-archive:` (gzip layer)' --oci "oci-archive:$work/image.oci.tar"
measure '`--oci docker-archive:` (plain layer)' --oci "docker-archive:$work/image.docker.tar"
measure '`--oci containers-storage:` (skopeo copy, then the layout)' --oci "$storage"
