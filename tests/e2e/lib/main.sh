# The end-to-end tier: one virtual device through its whole life cycle.
# Run by tests/e2e/run.
#
# A disk with BIOS GRUB running the shipped didymos GRUB script, a boot
# partition with each slot's kernel and initramfs, the object store (ext4 with
# fs-verity) and a data partition holding the bundles. The guest is Debian
# with systemd; the daemon starts by D-Bus activation, mark-good runs after
# boot-complete.target. Every scenario is asserted from inside the guest
# through a test agent on a virtio console (see lib/guest.sh).
#
#   tests/e2e/run        build what is not cached, then run every scenario
#
# Exit status 0 only when every scenario held. Logs of the last run (serial
# consoles, agent transcripts, QEMU output) stay in tests/e2e/cache/run/.
# Environment: E2E_CACHE (cache directory), E2E_BOOT_TIMEOUT (seconds per boot).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../../.."
REPO=$PWD
E2E_DIR=$REPO/tests/e2e
E2E_CACHE=${E2E_CACHE:-$E2E_DIR/cache}
E2E_WORK=$E2E_CACHE/run
VM_CACHE=$REPO/tests/vm/cache
BIN=$REPO/target/debug
T0=$(date +%s)

# shellcheck source=../../lib/vm.sh
source "$REPO/tests/lib/vm.sh"
# shellcheck source=build.sh
source "$E2E_DIR/lib/build.sh"
# shellcheck source=guest.sh
source "$E2E_DIR/lib/guest.sh"

[ "$(id -u)" = 0 ] || die "the end-to-end tier needs root (debootstrap, device nodes); run it as root"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 is missing (tests/deps.sh installs it)"

mkdir -p "$E2E_CACHE"
rm -rf "$E2E_WORK"
mkdir -p "$E2E_WORK"
trap 'guest_stop_quietly' EXIT

log "building didymos"
cargo build -q --features failpoints --bins || die "cargo build failed"
e2e_build
T_BUILD=$(date +%s)
DISK=$E2E_WORK/disk.raw
cp --sparse=always "$E2E_PRISTINE" "$DISK"
e2e_grub_config "$DISK"
CANARY=$(cut -d: -f2 <"$(dirname "$E2E_PRISTINE")/canary.digest")
CANARY=${CANARY##*sha256:}
CANARY=${CANARY%% *}

# ---------------------------------------------------------------- checks ----
FAILED=
fail() {
  log "CHECK FAILED: $*"
  FAILED=1
}
# check DESCRIPTION COMMAND...: runs the command on the host side.
check() {
  local what=$1
  shift
  if "$@"; then log "ok: $what"; else fail "$what"; fi
}
# expect_in TEXT PATTERN DESCRIPTION: extended regex match on a guest answer.
expect_in() {
  if printf '%s\n' "$1" | grep -qE -- "$2"; then
    log "ok: $3"
  else
    fail "$3 (expected /$2/ in:)"
    printf '%s\n' "$1" | sed 's/^/    | /' >&2
  fi
}
# The last line of a guest answer, without the progress bar drawn before it.
last_line() { printf '%s\n' "$1" | tail -n1 | sed 's/.*\x1b\[2K//'; }
# GRUB's line for each boot, counted on the serial console.
grub_boots() { tr -d '\r' <"$GUEST_CONSOLE" | grep -c "didymos: booting slot $1" || true; }

# Waits (in the guest) until mark-good has run, or failed.
WAIT_MARK_GOOD='for i in $(seq 300); do
  s=$(systemctl show -p ActiveState --value didymos-mark-good.service)
  [ "$s" = active ] && exit 0
  [ "$s" = failed ] && { systemctl status --no-pager didymos-mark-good.service; exit 1; }
  sleep 1
done; exit 1'

STATUS='didymos status --output-format shell'
PROGRESS='busctl get-property org.didymos.Installer1 / org.didymos.Installer1 Progress'
# One line per slot: "rootfs.N" n "key" type value ...
DBUS_SLOTS='busctl call org.didymos.Installer1 / org.didymos.Installer1 GetSlotStatus |
  sed "s/ \"rootfs\./\n\"rootfs./g"'
# Starts the daemon through D-Bus activation (a property read), so the CLI
# that follows talks to it.
ACTIVATE='busctl get-property org.didymos.Installer1 / org.didymos.Installer1 Operation &&
  systemctl is-active didymos.service'

declare -A RESULT
# E2E_SCENARIOS picks some (e.g. "1 6"); each needs only a booted device, except
# that 2-5 build on each other and 7 on 6 (B runs v5).
read -r -a SCENARIOS <<<"${E2E_SCENARIOS:-1 2 3 4 5 6 7}"
DESCRIPTION=(
  [1]="first boot into slot A (v1), mark-good marks A good"
  [2]="install v2 (delta) through the daemon, reboot into B, B marked good"
  [3]="v3 never reaches boot-complete.target: GRUB uses up A's attempts, falls back to B, rollback reported, A bad"
  [4]="power cut during an install: old slot boots, fsck clean, the same install then succeeds"
  [5]="an object of the running slot modified on the store partition: EIO in the guest, fsck names it"
  [6]="v5 from nginx on the host over HTTP through the daemon, netem delay and loss, the link cut mid-install; B boots v5"
  [7]="the update agent alone: v6 from a channel on the host, rebooted into once a logind inhibitor let go, success; v7 rebooted into after max-deferral, rolled back, failure"
)

scenario_1() {
  FAILED=
  guest_start "$DISK"
  local cmdline out
  guest_wait_ready || return 1
  cmdline=$GUEST_CMDLINE
  expect_in "$cmdline" 'didymos\.slot=A( |$)' "kernel command line names slot A"
  check "GRUB chose slot A" [ "$(grub_boots A)" = 1 ]
  out=$(guest_must 330 "$WAIT_MARK_GOOD") || return 1
  log "ok: didymos-mark-good.service ran"
  out=$(guest_must 30 'cat /etc/os-release; findmnt -n -o FSTYPE,OPTIONS /') || return 1
  expect_in "$out" '^VERSION_ID="1"$' "/etc/os-release says version 1"
  expect_in "$out" '^overlay .*lowerdir\+=.*datadir\+=' "/ is an overlay with a data-only lower layer"
  expect_in "$(tr -d '\r' <"$GUEST_CONSOLE")" 'didymos-setup-root: slot A .*with verity=require' \
    "setup-root mounted slot A with verity=require"
  out=$(guest_must 60 "systemctl is-enabled didymos.service || true; $ACTIVATE") || return 1
  expect_in "$out" '^disabled$' "the daemon is not started at boot"
  expect_in "$out" '^active$' "the daemon started by D-Bus activation"
  out=$(guest_must 60 "$STATUS") || return 1
  expect_in "$out" "^DIDYMOS_SYSTEM_BOOTED_BOOTNAME='A'$" "didymos status: booted from A"
  expect_in "$out" "^DIDYMOS_SLOT_BOOT_STATUS_1='good'$" "didymos status: A is good"
  expect_in "$out" "^DIDYMOS_SLOT_BUNDLE_VERSION_1='1'$" "didymos status: A holds version 1"
  out=$(guest_must 60 "$DBUS_SLOTS") || return 1
  expect_in "$out" '^"rootfs\.0" .*"boot-status" s "good"' "D-Bus GetSlotStatus: rootfs.0 good"
}

scenario_2() {
  local cmdline out
  out=$(guest_must 900 "$ACTIVATE && didymos install /data/bundles/v2.raucb") || return 1
  log "ok: didymos install v2.raucb: $(last_line "$out")"
  # Went through the daemon: its Progress property ended at 100 %.
  out=$(guest_must 60 "$PROGRESS") || return 1
  expect_in "$out" '^\(isi\) 100 ' "the install ran in the daemon (its Progress ended at 100 %)"
  out=$(guest_must 60 "$STATUS") || return 1
  expect_in "$out" "^DIDYMOS_BOOT_PRIMARY='rootfs\.1'$" "after the install B is the slot booted next"
  guest_reboot || return 1
  cmdline=$GUEST_CMDLINE
  expect_in "$cmdline" 'didymos\.slot=B( |$)' "after the reboot the kernel command line names slot B"
  check "GRUB chose slot B" [ "$(grub_boots B)" = 1 ]
  out=$(guest_must 30 'cat /etc/os-release') || return 1
  expect_in "$out" '^VERSION_ID="2"$' "/etc/os-release says version 2"
  guest_must 330 "$WAIT_MARK_GOOD" >/dev/null || return 1
  out=$(guest_must 60 "$STATUS") || return 1
  expect_in "$out" "^DIDYMOS_SYSTEM_BOOTED_BOOTNAME='B'$" "didymos status: booted from B"
  expect_in "$out" "^DIDYMOS_SLOT_BOOT_STATUS_2='good'$" "didymos status: B is good"
}

scenario_3() {
  local cmdline out a_before
  out=$(guest_must 900 "$ACTIVATE && didymos install /data/bundles/v3.raucb") || return 1
  log "ok: didymos install v3.raucb: $(last_line "$out")"
  out=$(guest_must 60 "$STATUS") || return 1
  expect_in "$out" "^DIDYMOS_BOOT_PRIMARY='rootfs\.0'$" "after the install A is the slot booted next"
  a_before=$(grub_boots A)
  guest_run 30 'systemctl reboot --no-block' >/dev/null
  # Each attempt of A fails its health check and reboots at once; GRUB
  # counts the attempts down and then boots B. Agents of A boots (if any
  # got that far) are skipped.
  local deadline=$(($(date +%s) + 4 * GUEST_BOOT_TIMEOUT))
  while :; do
    guest_wait_ready $((deadline - $(date +%s))) || return 1
    cmdline=$GUEST_CMDLINE
    case " $cmdline " in *" didymos.slot=B "*) break ;; esac
    log "an agent came up on: $cmdline"
  done
  check "GRUB tried A exactly 3 times (boot-attempts = 3)" [ "$(($(grub_boots A) - a_before))" = 3 ]
  check "every attempt of A failed its health check" \
    [ "$(tr -d '\r' <"$GUEST_CONSOLE" | grep -c 'e2e-health: this image is broken')" = 3 ]
  check "then GRUB fell back to B" [ "$(grub_boots B)" = 2 ]
  out=$(guest_must 30 'cat /etc/os-release') || return 1
  expect_in "$out" '^VERSION_ID="2"$' "/etc/os-release says version 2 again"
  guest_must 330 "$WAIT_MARK_GOOD" >/dev/null || return 1
  out=$(guest_must 60 "$STATUS; didymos status") || return 1
  expect_in "$out" "^DIDYMOS_SYSTEM_BOOTED_BOOTNAME='B'$" "didymos status: booted from B"
  expect_in "$out" "^DIDYMOS_SLOT_BOOT_STATUS_1='bad'$" "didymos status: A is bad"
  expect_in "$out" "^DIDYMOS_SLOT_BUNDLE_VERSION_1='3'$" "didymos status: A still holds the failed version 3"
  expect_in "$out" "^DIDYMOS_BOOT_PRIMARY='rootfs\.1'$" "didymos status: B is the slot booted next (rolled back)"
  expect_in "$out" "^DIDYMOS_ROLLBACK='.+'$" "didymos status reports the rollback"
  out=$(guest_must 60 "$DBUS_SLOTS; busctl get-property org.didymos.Installer1 / org.didymos.Installer1 BootSlot
    busctl get-property org.didymos.Installer1 / org.didymos.Installer1 LastError") || return 1
  expect_in "$out" '^s ".*(rootfs\.0|fell back|fallback|roll).*"$' "D-Bus LastError reports the rollback"
  expect_in "$out" '^"rootfs\.0" .*"boot-status" s "bad"' "D-Bus GetSlotStatus: rootfs.0 bad"
  expect_in "$out" '^s "B"$' "D-Bus BootSlot: B"
}

scenario_4() {
  local cmdline out
  # Start the install through the daemon (its D-Bus method, as a vendor
  # application would) and cut the power while it writes objects (12 x 4 MiB
  # of new data in v4).
  out=$(guest_must 600 "busctl call org.didymos.Installer1 / org.didymos.Installer1 InstallBundle 'sa{sv}' /data/bundles/v4.raucb 0 || exit 1
    for i in \$(seq 3000); do
      p=\$(busctl get-property org.didymos.Installer1 / org.didymos.Installer1 Progress 2>/dev/null)
      pct=\$(echo \"\$p\" | awk '{print \$2}')
      case \$pct in ''|*[!0-9]*) pct=0 ;; esac
      if [ \"\$pct\" -ge 30 ] && [ \"\$pct\" -lt 80 ]; then echo \"cut at: \$p\"; exit 0; fi
      if [ \"\$pct\" -ge 80 ]; then echo \"install got past the objects before the cut: \$p\"; exit 1; fi
      sleep 0.1
    done; exit 1") || return 1
  guest_kill
  log "power cut ($(last_line "$out"))"
  guest_start "$DISK"
  guest_wait_ready || return 1
  cmdline=$GUEST_CMDLINE
  expect_in "$cmdline" 'didymos\.slot=B( |$)' "after the power cut the old slot B boots"
  out=$(guest_must 30 'cat /etc/os-release') || return 1
  expect_in "$out" '^VERSION_ID="2"$' "/etc/os-release says version 2"
  guest_must 330 "$WAIT_MARK_GOOD" >/dev/null || return 1
  out=$(guest_must 60 "$STATUS") || return 1
  expect_in "$out" "^DIDYMOS_BOOT_PRIMARY='rootfs\.1'$" "the interrupted install did not activate A"
  out=$(guest_must 900 'didymos fsck') || return 1
  log "ok: didymos fsck is clean: $(last_line "$out")"
  out=$(guest_must 900 "$ACTIVATE && didymos install /data/bundles/v4.raucb") || return 1
  log "ok: the same install succeeds: $(last_line "$out")"
  out=$(guest_must 60 "$STATUS") || return 1
  expect_in "$out" "^DIDYMOS_SLOT_BUNDLE_VERSION_1='4'$" "A holds version 4"
  expect_in "$out" "^DIDYMOS_BOOT_PRIMARY='rootfs\.0'$" "A is the slot booted next"
  guest_poweroff || return 1
}

scenario_5() {
  local cmdline out obj blocks block
  obj="objects/${CANARY:0:2}/${CANARY:2}"
  blocks=$(debugfs -R "blocks /$obj" "$DISK?offset=$E2E_STORE_OFFSET" 2>/dev/null) ||
    { fail "debugfs cannot read the store partition"; return 1; }
  block=$(echo "$blocks" | awk '{print $1}')
  [[ "$block" =~ ^[0-9]+$ ]] || { fail "no blocks for /$obj on the store partition (debugfs: $blocks)"; return 1; }
  # Overwrite 16 bytes in the object's first block, outside the VM.
  printf 'tampered-by-host' | dd of="$DISK" bs=1 seek=$((E2E_STORE_OFFSET + block * 4096 + 100)) conv=notrunc status=none
  log "modified /$obj at store block $block"
  guest_start "$DISK"
  guest_wait_ready || return 1
  cmdline=$GUEST_CMDLINE
  expect_in "$cmdline" 'didymos\.slot=A( |$)' "the installed v4 in A boots"
  out=$(guest_must 30 'cat /etc/os-release') || return 1
  expect_in "$out" '^VERSION_ID="4"$' "/etc/os-release says version 4"
  out=$(guest_run 60 'cat /usr/share/didymos-e2e/canary >/dev/null; echo "status $?"')
  expect_in "$out" 'Input/output error' "reading the modified file fails with EIO"
  out=$(guest_run 60 'cat /usr/share/didymos-e2e/bulk-1 >/dev/null && echo intact-read-ok')
  expect_in "$out" '^intact-read-ok$' "an unmodified file still reads"
  out=$(guest_run 900 'didymos fsck; echo "fsck status $?"')
  expect_in "$out" "$CANARY" "didymos fsck names the modified object"
  expect_in "$out" 'fsck status [1-9]' "didymos fsck fails"
  guest_poweroff
}

# nginx on the host, serving $E2E_WWW; the guest reaches it at 10.0.2.2
# through QEMU's user networking. Access log: request|status|bytes|range.
NGINX_DIR=$E2E_WORK/nginx
nginx_start() {
  mkdir -p "$NGINX_DIR/tmp"
  NGINX_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  cat >"$NGINX_DIR/nginx.conf" <<NGINX
daemon on; user root; worker_processes 1; pid $NGINX_DIR/nginx.pid; error_log $NGINX_DIR/error.log;
events { worker_connections 64; }
http {
  log_format d '\$request|\$status|\$bytes_sent|\$http_range';
  access_log $NGINX_DIR/access.log d;
  client_body_temp_path $NGINX_DIR/tmp; proxy_temp_path $NGINX_DIR/tmp; fastcgi_temp_path $NGINX_DIR/tmp;
  uwsgi_temp_path $NGINX_DIR/tmp; scgi_temp_path $NGINX_DIR/tmp;
  server { listen 127.0.0.1:$NGINX_PORT; root $E2E_WWW; }
}
NGINX
  nginx -c "$NGINX_DIR/nginx.conf" -e "$NGINX_DIR/error.log"
}
nginx_stop() { [ -s "$NGINX_DIR/nginx.pid" ] && kill "$(cat "$NGINX_DIR/nginx.pid")" 2>/dev/null; }
nginx_bytes() { awk -F'|' '{ s += $3 } END { print s + 0 }' "$NGINX_DIR/access.log" 2>/dev/null; }
# qmp COMMAND-JSON: one QMP command to the running machine.
qmp() {
  python3 -c '
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile("rw")
f.readline()
for cmd in ("{\"execute\": \"qmp_capabilities\"}", sys.argv[2]):
    f.write(cmd + "\n")
    f.flush()
    while True:
        reply = json.loads(f.readline())
        if "return" in reply or "error" in reply:
            break
    if "error" in reply:
        sys.exit(reply["error"].get("desc", "QMP error"))
' "$E2E_WORK/qmp.sock" "$1"
}

scenario_6() {
  local cmdline out size sent url
  nginx_start || { fail "nginx did not start: $(cat "$NGINX_DIR/error.log")"; return 1; }
  size=$(stat -c %s "$E2E_WWW/v5.raucb")
  url="http://10.0.2.2:$NGINX_PORT/v5.raucb"
  GUEST_NIC=(-nic "user,model=virtio-net-pci,id=net0" -qmp "unix:$E2E_WORK/qmp.sock,server=on,wait=off")
  guest_start "$DISK"
  GUEST_NIC=(-nic none)
  guest_wait_ready || return 1
  guest_must 330 "$WAIT_MARK_GOOD" >/dev/null || return 1
  # The network: QEMU's user networking, configured by hand (a device
  # image without udev, which networkd waits for); then 40 ms of delay and
  # 1 % loss from the guest's kernel.
  out=$(guest_must 120 'dev=$(ls /sys/class/net | grep -v "^lo$" | head -n1)
    [ -n "$dev" ] || { ls /sys/class/net; exit 1; }
    ip link set "$dev" up && ip addr add 10.0.2.15/24 dev "$dev" &&
      ip route add default via 10.0.2.2 || exit 1
    tc qdisc replace dev "$dev" root netem delay 40ms loss 1% && tc qdisc show dev "$dev"') || return 1
  expect_in "$out" 'netem .*delay 40ms loss 1%' "netem on the guest's link: 40 ms delay, 1 % loss"
  out=$(guest_must 120 "$ACTIVATE && didymos info $url") || return 1
  expect_in "$out" '^This device: +an install fetches [0-9]+ bytes' "didymos info URL says what an install would fetch"
  # Start through the daemon's D-Bus method, then cut the link for longer
  # than the read timeout once a part of the objects has arrived.
  guest_must 60 "busctl call org.didymos.Installer1 / org.didymos.Installer1 InstallBundle 'sa{sv}' $url 0" >/dev/null || return 1
  local t=0
  while [ "$(nginx_bytes)" -lt $((size / 4)) ]; do
    ((t++ < 1200)) || { fail "the install fetched little in 10 minutes"; return 1; }
    sleep 0.5
  done
  qmp '{"execute": "set_link", "arguments": {"name": "net0", "up": false}}' || { fail "QMP set_link off"; return 1; }
  log "link cut at $(nginx_bytes) of $size bytes"
  sleep 12
  qmp '{"execute": "set_link", "arguments": {"name": "net0", "up": true}}' || { fail "QMP set_link on"; return 1; }
  log "link up again"
  out=$(guest_must 900 'for i in $(seq 1800); do
      op=$(busctl get-property org.didymos.Installer1 / org.didymos.Installer1 Operation)
      [ "$op" = "s \"idle\"" ] && break; sleep 0.5; done
    busctl get-property org.didymos.Installer1 / org.didymos.Installer1 Progress
    busctl get-property org.didymos.Installer1 / org.didymos.Installer1 LastError') || return 1
  expect_in "$out" '^\(isi\) 100 ' "the install over HTTP completed (Progress 100 %)"
  expect_in "$out" '^s ""$' "with no error"
  out=$(guest_run 60 'journalctl -b -u didymos.service --no-pager | grep -c "retrying bytes"')
  expect_in "$out" '^[1-9][0-9]*$' "the cut hit requests in flight, which the daemon retried and resumed"
  sent=$(nginx_bytes)
  check "nginx sent less than the whole bundle ($sent of $size bytes: v5 shares files with the installed slots)" [ "$sent" -lt "$size" ]
  out=$(guest_must 60 "$STATUS") || return 1
  expect_in "$out" "^DIDYMOS_BOOT_PRIMARY='rootfs\.1'$" "B is the slot booted next"
  guest_reboot || return 1
  cmdline=$GUEST_CMDLINE
  expect_in "$cmdline" 'didymos\.slot=B( |$)' "the kernel command line names slot B"
  out=$(guest_must 30 'cat /etc/os-release') || return 1
  expect_in "$out" '^VERSION_ID="5"$' "/etc/os-release says version 5"
  guest_must 330 "$WAIT_MARK_GOOD" >/dev/null || return 1
  out=$(guest_must 60 "$STATUS") || return 1
  expect_in "$out" "^DIDYMOS_SLOT_BOOT_STATUS_2='good'$" "B (v5) is marked good"
  nginx_stop
  guest_poweroff
}

# The update agent (didymos-agent.service) on its own: a signed channel on the
# host's nginx offers 5 -> 6 -> 7. Nothing is typed in the guest that changes
# anything: the channel's URL arrives in a drop-in the host writes to the
# data partition while the machine is off (/etc/didymos/updates.d links to
# /data/didymos-updates.d); the agent installs, reboots and reports by
# itself; the guest is only read. v5 holds a logind block inhibitor for 60 s
# after the agent starts (e2e-inhibit.service), v6 holds one for ever (max-deferral is
# 90 s), v7's health check fails.
# What the agent and the daemon said, when the agent did not get on.
agent_diagnosis() {
  guest_run 30 'systemctl status --no-pager -l didymos-agent.service didymos.service 2>&1 | tail -n 30
journalctl -b --no-pager -u didymos-agent.service -u didymos.service 2>&1 | tail -n 60' |
    sed 's/^/  guest: /' || true
}

scenario_7() {
  local out d="$E2E_WORK/channel" ch dropin a_before b_before deadline cmdline console
  nginx_start || { fail "nginx did not start: $(cat "$NGINX_DIR/error.log")"; return 1; }
  mkdir -p "$d"
  ch=$d/stable.toml
  "$BIN/didymos" channel new "$ch" --name e2e-stable >/dev/null &&
    "$BIN/didymos" channel add "$ch" --keyring "$E2E_KEYRING" --bundle "$E2E_WWW/v5.raucb" --url v5.raucb >/dev/null &&
    "$BIN/didymos" channel add "$ch" --keyring "$E2E_KEYRING" --bundle "$E2E_WWW/v6.raucb" --url v6.raucb >/dev/null &&
    "$BIN/didymos" channel add "$ch" --keyring "$E2E_KEYRING" --bundle "$E2E_WWW/v7.raucb" --url v7.raucb --from 6 >/dev/null &&
    "$BIN/didymos" channel sign "$ch" --cert "$E2E_CERT" --key "$E2E_KEY" --expires 1day \
      --output "$E2E_WWW/stable.channel" >/dev/null || { fail "building the channel"; return 1; }
  dropin=$d/50-e2e.toml
  printf '[updates]\nchannel = "http://10.0.2.2:%s/stable.channel"\nwariness = 0.5\n' "$NGINX_PORT" >"$dropin"
  chmod 644 "$dropin"
  printf 'mkdir didymos-updates.d\ncd didymos-updates.d\nwrite %s 50-e2e.toml\n' "$dropin" |
    debugfs -w -f - "$DISK?offset=$E2E_DATA_OFFSET" >"$E2E_WORK/debugfs-data.log" 2>&1 ||
    { fail "writing the drop-in to the data partition"; return 1; }
  GUEST_NIC=(-nic "user,model=virtio-net-pci,id=net0")
  guest_start "$DISK"
  GUEST_NIC=(-nic none)
  guest_wait_ready || return 1
  cmdline=$GUEST_CMDLINE
  expect_in "$cmdline" 'didymos\.slot=B( |$)' "the machine boots B (v5)"
  # The agent installs 6 into A, waits for the vendor's inhibitor, reboots.
  guest_wait_ready 300 || { agent_diagnosis; return 1; }
  cmdline=$GUEST_CMDLINE
  expect_in "$cmdline" 'didymos\.slot=A( |$)' "the agent rebooted into A by itself"
  console=$(tr -d '\r' <"$GUEST_CONSOLE")
  expect_in "$console" '6 is installed; the reboot is held back.*logind inhibitor "e2e-vendor-app"' \
    "the reboot into 6 was held back by the logind block inhibitor"
  expect_in "$console" 'rebooting into 6; next: verify the new slot after the boot; because 6 is installed; strategy immediate$' \
    "then the agent rebooted into 6 once the inhibitor was released (before max-deferral)"
  out=$(guest_must 30 'cat /etc/os-release') || return 1
  expect_in "$out" '^VERSION_ID="6"$' "/etc/os-release says version 6"
  guest_must 330 "$WAIT_MARK_GOOD" >/dev/null || return 1
  # The agent reports success once A is marked good (the guest is only read).
  out=$(guest_must 120 'for i in $(seq 120); do
      didymos status --output-format shell | grep -q "^DIDYMOS_AGENT_LAST_UPDATE=.6 success" && break; sleep 1; done
    didymos status --output-format shell | grep ^DIDYMOS_AGENT
    systemctl show -p User --value didymos-agent.service') || return 1
  expect_in "$out" "^DIDYMOS_AGENT_LAST_UPDATE='6 success booted into 6 in slot rootfs.0 and marked it good'$" \
    "the agent reports 6 as a success"
  expect_in "$out" '^didymos-agent$' "the agent runs as the unprivileged user didymos-agent"
  # Then 7: held back by v6's inhibitor until max-deferral, then tried three
  # times by GRUB, which falls back to A.
  a_before=$(grub_boots A) b_before=$(grub_boots B)
  deadline=$(($(date +%s) + 6 * GUEST_BOOT_TIMEOUT))
  while :; do
    guest_wait_ready $((deadline - $(date +%s))) || return 1
    case " $GUEST_CMDLINE " in *" didymos.slot=A "*) break ;; esac
    log "an agent came up on: $GUEST_CMDLINE"
  done
  console=$(tr -d '\r' <"$GUEST_CONSOLE")
  expect_in "$console" 'rebooting into 7; .*the maximum deferral \(1m 30s\) since .* is over, so the reboot goes ahead despite logind inhibitor "e2e-vendor-app"' \
    "the reboot into 7 went ahead after max-deferral despite the inhibitor"
  check "GRUB tried B (v7) 3 times" [ "$(($(grub_boots B) - b_before))" = 3 ]
  check "then fell back to A" [ "$(($(grub_boots A) - a_before))" = 1 ]
  guest_must 330 "$WAIT_MARK_GOOD" >/dev/null || return 1
  out=$(guest_must 120 'for i in $(seq 120); do
      didymos status --output-format shell | grep -q "^DIDYMOS_AGENT_LAST_UPDATE=.7 failure" && break; sleep 1; done
    cat /etc/os-release; didymos status --output-format shell') || return 1
  expect_in "$out" '^VERSION_ID="6"$' "the device runs 6 again"
  expect_in "$out" "^DIDYMOS_AGENT_LAST_UPDATE='7 failure 7 in slot rootfs.1 was tried and did not come up healthy" \
    "the agent reports 7 as a failure (rolled back)"
  expect_in "$out" "^DIDYMOS_SLOT_BOOT_STATUS_2='bad'$" "B (v7) is bad"
  out=$(guest_must 60 'sleep 20; didymos status --output-format shell | grep ^DIDYMOS_AGENT_OUTCOME') || return 1
  expect_in "$out" "up to date: 6" "and does not try 7 again"
  check "nginx served the channel and the bundles by range" grep -q 'GET /v7.raucb' "$NGINX_DIR/access.log"
  nginx_stop
  guest_poweroff
}

for n in "${SCENARIOS[@]}"; do
  if [ -n "${BROKEN:-}" ]; then
    RESULT[$n]="NOT RUN (scenario $BROKEN left the device in an unknown state)"
    continue
  fi
  log "=== scenario $n: ${DESCRIPTION[$n]}"
  FAILED=
  t=$(date +%s)
  # A scenario that could not go on stops the run; one whose checks failed
  # but which got through leaves the device usable for the next one.
  if "scenario_$n"; then
    [ -z "$FAILED" ] && RESULT[$n]="PASS ($(($(date +%s) - t)) s)" || RESULT[$n]="FAIL ($(($(date +%s) - t)) s)"
  else
    RESULT[$n]="FAIL ($(($(date +%s) - t)) s, could not go on)"
    BROKEN=$n
  fi
done
guest_stop_quietly

T_END=$(date +%s)
echo
echo "e2e summary (build $((T_BUILD - T0)) s, scenarios $((T_END - T_BUILD)) s, total $((T_END - T0)) s):"
status=0
for n in "${SCENARIOS[@]}"; do
  printf '  scenario %s: %-55s %s\n' "$n" "${RESULT[$n]}" "${DESCRIPTION[$n]}"
  case ${RESULT[$n]} in PASS*) ;; *) status=1 ;; esac
done
[ "$status" = 0 ] && echo "all scenarios held" || echo "logs: ${E2E_WORK#"$REPO"/}/"
exit $status
