# Running and talking to the virtual device. Sourced by tests/e2e/run.
#
# The machine: qemu-system-x86_64 with software emulation, one raw disk on
# virtio, the kernel's console on the serial port (written to a log file that
# also shows GRUB's output), and the test agent on a virtio console whose
# two directions are a pair of FIFOs on the host. The agent speaks a line
# protocol (see rootfs/usr/lib/didymos-e2e/agent); every wait has a timeout.

GUEST_BOOT_TIMEOUT=${E2E_BOOT_TIMEOUT:-400}
GUEST_PID=
GUEST_READER=
GUEST_RUN=0
GUEST_READY_SEEN=0
GUEST_QEMU_EXTRA=()
# The network card: none, or QEMU user networking with a QMP socket to cut
# the link (scenario 6).
GUEST_NIC=(-nic none)

guest_start() {
  local disk=$1
  guest_stop_quietly
  GUEST_RUN=$((GUEST_RUN + 1))
  GUEST_CONSOLE=$E2E_WORK/console-$GUEST_RUN.log
  GUEST_AGENT_LOG=$E2E_WORK/agent-$GUEST_RUN.log
  local fifo=$E2E_WORK/agent
  rm -f "$fifo.in" "$fifo.out"
  mkfifo "$fifo.in" "$fifo.out"
  : >"$GUEST_AGENT_LOG"
  GUEST_READY_SEEN=0
  qemu-system-x86_64 -machine pc,accel=tcg -m 1024 -smp 2 \
    -display none -vga none -monitor none "${GUEST_NIC[@]}" \
    -serial "file:$GUEST_CONSOLE" \
    -drive "file=$disk,format=raw,if=virtio,cache=writeback" \
    -device virtio-serial-pci -chardev "pipe,id=agent,path=$fifo" -device virtconsole,chardev=agent \
    "${GUEST_QEMU_EXTRA[@]}" \
    </dev/null >"$E2E_WORK/qemu-$GUEST_RUN.log" 2>&1 &
  GUEST_PID=$!
  # O_RDWR opens of a FIFO never block; QEMU opens its ends on start.
  exec {GUEST_IN}<>"$fifo.in"
  cat <>"$fifo.out" >>"$GUEST_AGENT_LOG" &
  GUEST_READER=$!
  log "machine $GUEST_RUN started (console: ${GUEST_CONSOLE#"$REPO"/})"
}

guest_running() { [ -n "$GUEST_PID" ] && kill -0 "$GUEST_PID" 2>/dev/null; }

# The power cord: SIGKILL, no chance to flush anything.
guest_kill() {
  [ -n "$GUEST_PID" ] && kill -KILL "$GUEST_PID" 2>/dev/null
  guest_reap
}

guest_reap() {
  [ -n "$GUEST_PID" ] && wait "$GUEST_PID" 2>/dev/null
  [ -n "$GUEST_READER" ] && kill "$GUEST_READER" 2>/dev/null && wait "$GUEST_READER" 2>/dev/null
  # (no redirection on this exec: it would stay in force for the whole run)
  [ -n "${GUEST_IN:-}" ] && exec {GUEST_IN}>&-
  GUEST_PID= GUEST_READER= GUEST_IN=
}

guest_stop_quietly() {
  if guest_running; then guest_kill; fi
  GUEST_PID=
}

# Waits for the machine to power off by itself.
guest_wait_exit() {
  local limit=$1 t=0
  while guest_running; do
    ((t++ < limit * 2)) || return 1
    sleep 0.5
  done
  guest_reap
}

# Waits for the agent's greeting of the next boot; sets GUEST_CMDLINE to the
# kernel command line of that boot. Fails on timeout or when the machine
# stopped. (Not for $(...): it keeps count of the boots seen.)
guest_wait_ready() {
  local limit=${1:-$GUEST_BOOT_TIMEOUT} t=0 line
  while :; do
    line=$(tr -d "\r" <"$GUEST_AGENT_LOG" | grep "^E2E-AGENT-READY " | sed -n "$((GUEST_READY_SEEN + 1))p")
    if [ -n "$line" ]; then
      GUEST_READY_SEEN=$((GUEST_READY_SEEN + 1))
      GUEST_BOOT_ID=$(echo "$line" | awk '{print $2}')
      GUEST_CMDLINE=${line#E2E-AGENT-READY * }
      log "boot $GUEST_READY_SEEN of machine $GUEST_RUN is up ($(tr -d '\r' <"$GUEST_AGENT_LOG" |
        grep '^E2E-AGENT-UPTIME ' | sed -n "${GUEST_READY_SEEN}p" | cut -d' ' -f2) s after the kernel started): $GUEST_CMDLINE"
      return 0
    fi
    guest_running || { log "the machine stopped before its agent came up"; return 1; }
    ((t++ < limit * 2)) || { log "no agent greeting within ${limit}s"; return 1; }
    sleep 0.5
  done
}

# Waits until the console log matches an extended regex ($1) at least $2 times.
guest_wait_console() {
  local re=$1 count=${2:-1} limit=${3:-$GUEST_BOOT_TIMEOUT} t=0
  while [ "$(tr -d '\r' <"$GUEST_CONSOLE" | grep -cE "$re")" -lt "$count" ]; do
    guest_running || { log "machine stopped while waiting for /$re/ x$count on the console"; return 1; }
    ((t++ < limit * 2)) || { log "console did not show /$re/ x$count within ${limit}s"; return 1; }
    sleep 0.5
  done
}

# guest_run TIMEOUT SCRIPT: runs a bash script in the guest; prints its
# output; returns its exit status (255 when the agent did not answer).
guest_run() {
  local limit=$1 script=$2 id start t=0 done_line
  id=$(date +%s%N)
  start=$(($(wc -l <"$GUEST_AGENT_LOG") + 1))
  printf 'CMD %s %s %s\n' "$id" "$limit" "$(printf '%s' "$script" | base64 -w0)" >&"$GUEST_IN"
  while :; do
    done_line=$(tail -n +"$start" "$GUEST_AGENT_LOG" | tr -d "\r" | grep -m1 "^E2E-DONE $id ")
    [ -n "$done_line" ] && break
    if ! guest_running || ((t++ > (limit + 15) * 4)); then
      log "guest command $id got no answer: $(echo "$script" | head -n1)"
      return 255
    fi
    sleep 0.25
  done
  tail -n +"$start" "$GUEST_AGENT_LOG" | tr -d "\r" | sed "/^E2E-DONE $id /,\$d" | grep -v '^E2E-AGENT-READY '
  return "${done_line##* }"
}

# Like guest_run, but a non-zero status is a failed check.
guest_must() {
  local out rc
  out=$(guest_run "$@")
  rc=$?
  if [ "$rc" != 0 ]; then
    log "guest command failed (status $rc): $(echo "$2" | head -n1)"
    echo "$out" | sed 's/^/    | /' >&2
    return 1
  fi
  echo "$out"
}

# Asks the guest to reboot and waits for the next boot's agent (sets
# GUEST_CMDLINE).
guest_reboot() {
  guest_run 30 'systemctl reboot --no-block' >/dev/null || return 1
  guest_wait_ready
}

guest_poweroff() {
  guest_run 30 'systemctl poweroff --no-block' >/dev/null
  guest_wait_exit 180 || { log "the machine did not power off within 180s"; guest_kill; return 1; }
}
