#!/usr/bin/env bash
# Object deltas and full bundles against their peers, side by side in one run
# on one machine, for the two update pairs of bench/trees.sh (a kernel
# upgrade between two Debian point releases plus one added package; a
# handful of library security fixes):
#
#   - update size: the didymos delta bundle (object deltas), the file-level
#     delta (--no-object-deltas), the full bundle, `xdelta3 -9 -B 1073741824`
#     of the two uncompressed rootfs tars, and xdelta3 of the two squashfs
#     images (what a block-delta updater ships); build time, CPU time, peak
#     memory of each;
#   - install: time and bytes written of the object-delta install against the
#     file-level delta install, on a temporary-directory device;
#   - full bundle of the new tree (with packs, and `--no-packs`) against
#     `tar | zstd -3 -T2`, `mksquashfs -comp zstd` and `mksquashfs` with
#     RAUC's default options; the install of the full bundle with packs
#     against `--no-packs`, each on an empty device.
#
#   bench/delta.sh [WORKDIR]     (as root: debootstrap, chroot, mksquashfs)
#
# Needs: xdelta3, squashfs-tools, zstd, GNU time, debootstrap. Prints
# Markdown for BENCHMARKS.md. A benchmark, not a test: it asserts nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
didymos=${DIDYMOS:-$top/target/release/didymos}
work=${1:-$(mktemp -d /var/tmp/didymos-delta.XXXXXX)}
mkdir -p "$work"
read -r k1 k2 l1 l2 < <("$here/trees.sh" pairs)
cache=$(dirname "$k1")

# A demo device gives keys and a configuration; its own bundles are not used.
new_device() { # dir
  rm -rf "$1"
  "$didymos" demo "$1" >/dev/null
  # The Debian trees' kernels are /boot/vmlinuz-<version>: no boot files.
  sed -i '/^boot-files/d; /^boot-directory/d' "$1/system.conf"
}
new_device "$work/dev"
pki=$work/dev/pki

# Runs a command under GNU time; prints "wall cpu peak_kib".
measure() {
  /usr/bin/time -f "%e %U %S %M" -o "$work/time" "$@" >"$work/out" 2>"$work/err" || {
    cat "$work/err" >&2
    exit 1
  }
  local secs user sys rss
  read -r secs user sys rss <"$work/time"
  echo "$secs $(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.1f", u + s }') $rss"
}
bundle() { # rootfs, output, version, extra options...
  local rootfs=$1 out=$2 version=$3
  shift 3
  measure "$didymos" bundle create --rootfs "$rootfs" --output "$out" \
    --cert "$pki/signing.pem" --key "$pki/signing.key" --intermediate "$pki/intermediate-ca.pem" \
    --compatible didymos-demo --version "$version" "$@"
}
size() { stat -c %s "$1"; }
mb() { awk -v b="$1" 'BEGIN { printf "%.2f", b / 1e6 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
row() { # label, file, "wall cpu rss"
  local w c r
  read -r w c r <<<"$3"
  printf '| %s | %s MB | %s s | %s s | %s MiB |\n' "$1" "$(mb "$(size "$2")")" "$w" "$c" "$((r / 1024))"
}
squash_rauc() { mksquashfs "$1" "$2" -all-root -noappend -no-progress -no-xattrs -processors 2; }
# A device of its own, with the base bundle installed (booted into B) when
# one is given: device dir, [base bundle].
device_with() {
  new_device "$1"
  cp "$pki/root-ca.pem" "$1/pki/root-ca.pem"
  [ -n "${2:-}" ] || return 0
  "$didymos" --conf "$1/system.conf" install --direct "$2" >"$1.base-install.log" 2>&1 || {
    cat "$1.base-install.log" >&2
    exit 1
  }
  printf 'didymos.slot=B\n' >"$1/cmdline"
}
# Installs a bundle on a device and prints its row: label, device, bundle.
install_row() {
  local t written tw tc tr
  sync
  t=$(measure "$didymos" --conf "$2/system.conf" install --direct "$3")
  written=$(sed -n 's/.*objects written (\([0-9]*\) bytes).*/\1/p' "$work/out")
  read -r tw tc tr <<<"$t"
  printf '| %s | %s MB | %s s | %s s | %s MB | %s MiB |\n' "$1" "$(mb "$(size "$3")")" \
    "$tw" "$tc" "$(mb "${written:-0}")" "$((tr / 1024))"
}

echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)," \
  "$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n1)," \
  "sha_ni: $(grep -q -w sha_ni /proc/cpuinfo && echo yes || echo no)," \
  "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)."
echo

declare -A results
pair() { # name, old.tar, new.tar
  local name=$1 old=$2 new=$3 o n
  # The trees themselves, not links to them (mksquashfs would pack the link).
  o=$(readlink -f "$cache/$(basename "$old" .tar)") n=$(readlink -f "$cache/$(basename "$new" .tar)")
  local w=$work/$name
  mkdir -p "$w"
  cat "$old" "$new" >/dev/null # warm the page cache
  bundle "$old" "$w/old.raucb" 1.0 >/dev/null
  local full file obj xt xs
  full=$(bundle "$new" "$w/full.raucb" 2.0)
  file=$(bundle "$new" "$w/file-delta.raucb" 2.0 --base "$w/old.raucb" --no-object-deltas)
  obj=$(bundle "$new" "$w/object-delta.raucb" 2.0 --base "$w/old.raucb")
  obj19=$(bundle "$new" "$w/object-delta-19.raucb" 2.0 --base "$w/old.raucb" --delta-level 19)
  xt=$(measure xdelta3 -9 -B 1073741824 -e -f -s "$old" "$new" "$w/tar.xdelta")
  squash_rauc "$o" "$w/old.squashfs" >/dev/null
  squash_rauc "$n" "$w/new.squashfs" >/dev/null
  xs=$(measure xdelta3 -9 -B 1073741824 -e -f -s "$w/old.squashfs" "$w/new.squashfs" "$w/squashfs.xdelta")
  local best
  best=$(( $(size "$w/tar.xdelta") < $(size "$w/squashfs.xdelta") ? $(size "$w/tar.xdelta") : $(size "$w/squashfs.xdelta") ))
  echo "### Update $name: $(basename "$old") → $(basename "$new")"
  echo
  echo "| update | size | wall time | CPU time | peak RSS |"
  echo "|---|---|---|---|---|"
  row "didymos object-delta bundle (\`--base\`)" "$w/object-delta.raucb" "$obj"
  row "didymos object-delta bundle, \`--delta-level 19\`" "$w/object-delta-19.raucb" "$obj19"
  row "didymos file-level delta (\`--base --no-object-deltas\`)" "$w/file-delta.raucb" "$file"
  row "didymos full bundle" "$w/full.raucb" "$full"
  row "\`xdelta3 -9 -B 1073741824\` of the rootfs tars" "$w/tar.xdelta" "$xt"
  row "\`xdelta3 -9 -B 1073741824\` of the squashfs images (RAUC options)" "$w/squashfs.xdelta" "$xs"
  echo
  echo "Object delta / best xdelta3: $(ratio "$(size "$w/object-delta.raucb")" "$best");" \
    "object delta / file-level delta: $(ratio "$(size "$w/object-delta.raucb")" "$(size "$w/file-delta.raucb")")."
  "$didymos" info --no-verify "$w/object-delta.raucb" | sed -n 's/^\(Deltas\|Sources\|Objects\|Payload\|Image delta\):/  - \1:/p'
  echo

  # Install: the object delta and the file-level delta over the same base,
  # each on its own device.
  echo "| install over $(basename "$old" .tar) | bundle | time | CPU time | bytes written | peak RSS |"
  echo "|---|---|---|---|---|---|"
  for kind in object-delta file-delta; do
    device_with "$w/dev-$kind" "$w/old.raucb"
    install_row "$kind" "$w/dev-$kind" "$w/$kind.raucb"
  done
  echo

  # Full bundle of the new tree against its peers.
  local tz sz sr
  tz=$(measure bash -c "tar -C '$n' --numeric-owner --xattrs --xattrs-include='*' -cf - . | zstd -3 -T2 -q -f -o '$w/new.tar.zst'")
  sz=$(measure mksquashfs "$n" "$w/new-zstd.squashfs" -comp zstd -noappend -no-progress -processors 2)
  sr=$(measure mksquashfs "$n" "$w/new-rauc.squashfs" -all-root -noappend -no-progress -no-xattrs -processors 2)
  local np nd pv
  pv=$(bundle "$new" "$w/full-previous.raucb" 2.0 --previous "$w/old.raucb")
  np=$(bundle "$new" "$w/full-nopacks.raucb" 2.0 --no-packs)
  nd=$(bundle "$new" "$w/full-nodict.raucb" 2.0 --no-packs --no-dictionary)
  echo "| full image of $(basename "$new" .tar) | size | wall time | CPU time | peak RSS |"
  echo "|---|---|---|---|---|"
  row "didymos full bundle (zstd 3, packs)" "$w/full.raucb" "$full"
  row "didymos full bundle, packs laid out \`--previous\` the old bundle" "$w/full-previous.raucb" "$pv"
  row "didymos full bundle, \`--no-packs\` (dictionary)" "$w/full-nopacks.raucb" "$np"
  row "didymos full bundle, \`--no-packs --no-dictionary\`" "$w/full-nodict.raucb" "$nd"
  row "\`tar | zstd -3 -T2\`" "$w/new.tar.zst" "$tz"
  row "\`mksquashfs -comp zstd\`" "$w/new-zstd.squashfs" "$sz"
  row "\`mksquashfs\` with RAUC's options (gzip)" "$w/new-rauc.squashfs" "$sr"
  echo
  echo "Full bundle / tar|zstd: size $(ratio "$(size "$w/full.raucb")" "$(size "$w/new.tar.zst")")," \
    "wall time $(ratio "$(cut -d' ' -f1 <<<"$full")" "$(cut -d' ' -f1 <<<"$tz")")."
  "$didymos" info --no-verify "$w/full.raucb" | sed -n 's/^\(Packs\|Objects\|Payload\|Image\):/  - \1:/p'
  echo

  # Install speed of the full bundle, with packs and without, each on a
  # device of its own that has none of its objects.
  echo "| install of the full bundle on an empty device | bundle | time | CPU time | bytes written | peak RSS |"
  echo "|---|---|---|---|---|---|"
  for kind in full full-nopacks; do
    device_with "$w/dev-$kind"
    install_row "$kind" "$w/dev-$kind" "$w/$kind.raucb"
  done
  echo
  # What a device running the old version fetches of each full bundle over
  # HTTP (the objects it lacks; with packs, every pack holding one of them).
  local dev=$w/dev-old
  device_with "$dev" "$w/old.raucb"
  for kind in full full-previous full-nopacks; do
    printf -- '- %s over %s, as a device fetches it over HTTP: %s MB\n' "$kind" "$(basename "$old" .tar)" \
      "$(mb "$("$didymos" --conf "$dev/system.conf" info --output-format json "$w/$kind.raucb" | sed -n 's/.*"download-size":\([0-9]*\).*/\1/p')")"
  done
  echo
  rm -rf "$w"/*.squashfs "$w"/dev-*
}

pair kernel "$k1" "$k2"
pair libraries "$l1" "$l2"
