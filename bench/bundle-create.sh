#!/usr/bin/env bash
# Bundle creation throughput against the machine's SHA-256 limit and against
# mksquashfs (what a RAUC bundle of the same tree costs).
#
#   bench/bundle-create.sh [TREE] [WORKDIR]      (defaults: /usr, a temp dir)
#
# Needs: openssl, mksquashfs (squashfs-tools), GNU time. Prints a Markdown
# table for BENCHMARKS.md. A benchmark, not a test: it asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=${1:-/usr}
work=${2:-$(mktemp -d /var/tmp/didymos-bench.XXXXXX)}
mkdir -p "$work"
trap 'rm -rf "$work"/pki "$work"/out.raucb "$work"/out.squashfs' EXIT

cargo build --release --bin didymos >/dev/null
bin=target/release/didymos
bundles/make-dev-pki.sh "$work/pki" >/dev/null

bytes=$(du -sb --apparent-size "$tree" 2>/dev/null | cut -f1)
files=$(find "$tree" -xdev -type f 2>/dev/null | wc -l)
echo "tree: $tree, $files regular files, $bytes bytes (apparent)" >&2

# Warm the page cache so every tool reads from memory.
find "$tree" -xdev -type f -print0 2>/dev/null | xargs -0 cat >/dev/null 2>&1 || true

# The 16 KiB column, in MB/s.
speed() { openssl speed -seconds 3 "$@" -evp sha256 2>/dev/null | awk '/^sha256/ {v=$NF} END {sub(/k$/, "", v); printf "%.0f", v / 1000}'; }
sha1=$(speed)
sha=$(speed -multi 2)

measure() { # label, command...
  local label=$1; shift
  /usr/bin/time -f "%e %M %U %S" -o "$work/time" "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  read -r secs rss user sys <"$work/time"
  echo "$label $secs $rss $(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.1f", u + s }')"
}

sync
read -r _ b_secs b_rss b_cpu < <(measure bundle "$bin" bundle create --rootfs "$tree" --output "$work/out.raucb" \
  --cert "$work/pki/signing.pem" --key "$work/pki/signing.key" --intermediate "$work/pki/intermediate-ca.pem" \
  --compatible bench --version 1)
b_size=$(stat -c %s "$work/out.raucb")
read -r _ v_secs v_rss v_cpu < <(measure verify "$bin" bundle verify --keyring "$work/pki/root-ca.pem" "$work/out.raucb")
rm -f "$work/out.raucb"
sync
read -r _ s_secs s_rss s_cpu < <(measure squashfs mksquashfs "$tree" "$work/out.squashfs" -comp zstd -noappend -no-progress -processors 2)
s_size=$(stat -c %s "$work/out.squashfs")

mbps() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.0f", b / s / 1e6 }'; }
echo
echo "Load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)."
echo "Tree: \`$tree\`, $files regular files, $((bytes / 1000000)) MB."
echo
echo "| | wall time | CPU time | throughput (wall) | output size | peak RSS |"
echo "|---|---|---|---|---|---|"
echo "| \`didymos bundle create\` (zstd 3, 2 threads) | ${b_secs} s | ${b_cpu} s | $(mbps "$bytes" "$b_secs") MB/s | $((b_size / 1000000)) MB | $((b_rss / 1024)) MiB |"
echo "| \`didymos bundle verify\` (every object) | ${v_secs} s | ${v_cpu} s | $(mbps "$bytes" "$v_secs") MB/s | | $((v_rss / 1024)) MiB |"
echo "| \`mksquashfs -comp zstd -processors 2\` | ${s_secs} s | ${s_cpu} s | $(mbps "$bytes" "$s_secs") MB/s | $((s_size / 1000000)) MB | $((s_rss / 1024)) MiB |"
echo "| SHA-256 limit, \`openssl speed -evp sha256\` (16 KiB blocks) | | | ${sha1} MB/s one core, ${sha} MB/s two | | |"
