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
"$didymos" demo "$work/dev" >/dev/null
dev=$work/dev
pki=$dev/pki
make_bundle() { # rootfs, output, version, [base]
  "$didymos" bundle create --rootfs "$1" --output "$2" --cert "$pki/signing.pem" \
    --key "$pki/signing.key" --intermediate "$pki/intermediate-ca.pem" \
    --compatible didymos-demo --version "$3" ${4:+--base "$4"} >/dev/null
}
make_bundle "$v1" "$work/v1.raucb" 10.0
make_bundle "$v2" "$work/v2.raucb" 11.0
make_bundle "$v2" "$work/v2-delta.raucb" 11.0 "$work/v1.raucb"

store_bytes() { du -sb "$dev/store" | cut -f1; }
measure() { # label, bundle
  local before after
  before=$(store_bytes)
  /usr/bin/time -f '%e %M' -o "$work/time" "$didymos" --conf "$dev/system.conf" install "$2" >"$work/out" 2>/dev/null
  after=$(store_bytes)
  read -r secs kib <"$work/time"
  local written
  written=$(sed -n 's/.*objects written (\([0-9]*\) bytes).*/\1/p' "$work/out")
  printf '| %s | %s | %s s | %s MiB | %s MiB | %s MiB |\n' "$1" \
    "$(du -h "$2" | cut -f1)" "$secs" "$((written / 1048576))" "$(((after - before) / 1048576))" "$((kib / 1024))"
}
echo "| install | bundle size | time | bytes written | store growth | peak RSS |"
echo "|---|---|---|---|---|---|"
# The demo device runs v2.0 in B; v1 goes to A, then the v2 delta to B.
measure "full (v1)" "$work/v1.raucb"
# Reboot into the new slot, as the device would, so the next install targets the other one.
printf 'didymos.slot=A\n' >"$dev/cmdline"
measure "delta (v1 → v2)" "$work/v2-delta.raucb"
printf 'didymos.slot=B\n' >"$dev/cmdline"
measure "full (v2) over v1" "$work/v2.raucb"
