#!/usr/bin/env bash
# Resident memory of the idle D-Bus service.
#
#   bench/dbus-idle-rss.sh [path/to/didymos]    (default: target/release/didymos)
#
# Starts a private dbus-daemon and the service on a directory-backed device,
# reads VmRSS/VmHWM from /proc after start, after a round of calls, and after
# 100 more property reads, and prints them. Nothing is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/didymos}
[ -x "$bin" ] || { echo "no binary at $bin; run: cargo build --release" >&2; exit 1; }

dir=$(mktemp -d)
bus_pid= svc_pid=
cleanup() {
  [ -s "$dir/service.log" ] && [ -z "${ok:-}" ] && sed "s/^/service: /" "$dir/service.log" >&2
  [ -n "$svc_pid" ] && kill "$svc_pid" 2>/dev/null || true
  [ -n "$bus_pid" ] && kill "$bus_pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

cat > "$dir/bus.conf" <<CONF
<busconfig><type>session</type><listen>unix:path=$dir/bus</listen><auth>EXTERNAL</auth>
<policy context="default"><allow send_destination="*" eavesdrop="true"/><allow eavesdrop="true"/><allow own="*"/></policy></busconfig>
CONF
dbus-daemon --config-file="$dir/bus.conf" --nofork --nopidfile --print-address=1 >"$dir/addr" 2>/dev/null &
bus_pid=$!
for _ in $(seq 50); do [ -s "$dir/addr" ] && break; sleep 0.1; done
export DBUS_SESSION_BUS_ADDRESS=$(head -1 "$dir/addr") DBUS_STARTER_BUS_TYPE=session

mkdir -p "$dir/dev/store" "$dir/dev/data"
echo "didymos.slot=A" > "$dir/dev/cmdline"
cat > "$dir/dev/system.conf" <<CONF
[system]
compatible = "bench"
bootloader = "file"
data-directory = "data"
kernel-cmdline = "cmdline"
[store]
path = "store"
[bootloader]
state-file = "boot.toml"
[slot.rootfs.0]
type = "composefs"
bootname = "A"
[slot.rootfs.1]
type = "composefs"
bootname = "B"
[dbus]
rauc-compat = true
CONF

"$bin" --conf "$dir/dev/system.conf" service 2>"$dir/service.log" &
svc_pid=$!
for _ in $(seq 100); do
  timeout 5 busctl --user get-property org.didymos.Installer1 / org.didymos.Installer1 Operation >/dev/null 2>&1 && break
  sleep 0.1
done
rss() { awk '/^VmRSS|^VmHWM/ {printf "%s %s kB  ", $1, $2}' "/proc/$svc_pid/status"; echo; }

sleep 1
printf 'after start:            '; rss
busctl --user call org.didymos.Installer1 / org.didymos.Installer1 GetSlotStatus >/dev/null 2>&1 || true
busctl --user introspect org.didymos.Installer1 / >/dev/null
busctl --user call org.didymos.Installer1 / org.didymos.Installer1 Mark ss good booted >/dev/null
printf 'after a round of calls: '; rss
for _ in $(seq 100); do
  busctl --user get-property org.didymos.Installer1 / org.didymos.Installer1 Progress >/dev/null
done
sleep 1
printf 'after 100 more reads:   '; rss
ok=1
echo "binary: $bin ($(stat -c %s "$bin") bytes)"
