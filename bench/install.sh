#!/usr/bin/env bash
# Install time, bytes written and peak memory for a full and a delta bundle
# of a realistic tree (bench/trees.sh), on a temporary-directory device.
#
#   bench/install.sh        (as root, for debootstrap; cargo build --release first)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
didymos=${DIDYMOS:-$top/target/release/didymos}
read -r v1 v2 < <("$here/trees.sh")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A demo device gives keys and a configuration; its own bundles are not used.
new_device() { # dir
  "$didymos" demo "$1" >/dev/null
  # A Debian tree has no /boot/vmlinuz: no boot files for this device.
  sed -i '/^boot-files/d; /^boot-directory/d' "$1/system.conf"
}
new_device "$work/dev"
pki=$work/dev/pki
make_bundle() { # rootfs, output, version, [base]
  "$didymos" bundle create --rootfs "$1" --output "$2" --cert "$pki/signing.pem" \
    --key "$pki/signing.key" --intermediate "$pki/intermediate-ca.pem" \
    --compatible didymos-demo --version "$3" ${4:+--base "$4"} >/dev/null
}
make_bundle "$v1" "$work/v1.raucb" 10.0
make_bundle "$v2" "$work/v2.raucb" 11.0
make_bundle "$v2" "$work/v2-delta.raucb" 11.0 "$work/v1.raucb"

measure() { # label, device, bundle
  local dev=$2 before after secs kib written recheck
  before=$(du -sb "$dev/store" | cut -f1)
  /usr/bin/time -f '%e %M' -o "$work/time" "$didymos" -v --conf "$dev/system.conf" install --direct "$3" >"$work/out" 2>"$work/err"
  after=$(du -sb "$dev/store" | cut -f1)
  read -r secs kib <"$work/time"
  written=$(sed -n 's/.*objects written (\([0-9]*\) bytes).*/\1/p' "$work/out")
  # Part of the time: re-checking the objects the store already has (hashed,
  # as the host's store has no fs-verity).
  recheck=$(sed -n 's/.*checked the \([0-9]*\) objects the store already has in \(.*\)/\1 in \2/p' "$work/err")
  printf '| %s | %s | %s s | %s | %s MiB | %s MiB | %s MiB |\n' "$1" \
    "$(du -h "$3" | cut -f1)" "$secs" "${recheck:-0}" "$((written / 1048576))" "$(((after - before) / 1048576))" "$((kib / 1024))"
}
boot() { printf 'didymos.slot=%s\n' "$2" >"$1/cmdline"; } # device, bootname

echo "| install | bundle size | time | of which: reused objects re-checked | bytes written | store growth | peak RSS |"
echo "|---|---|---|---|---|---|---|"
# The demo leaves slot A booted; v1 goes to B, the device boots B, v2 goes to A.
measure "full v1" "$work/dev" "$work/v1.raucb"
boot "$work/dev" B
measure "delta v1 → v2" "$work/dev" "$work/v2-delta.raucb"
# The same update from the full v2 bundle, on a second device that runs v1.
new_device "$work/dev2"
cp "$pki/root-ca.pem" "$work/dev2/pki/root-ca.pem" # trust the bundles' signer
measure "full v1 (second device)" "$work/dev2" "$work/v1.raucb"
boot "$work/dev2" B
measure "full v2 over v1" "$work/dev2" "$work/v2.raucb"
