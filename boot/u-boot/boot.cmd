# didymos: A/B slot selection with boot counting for U-Boot.
#
# Variables (the ones RAUC's U-Boot integration uses):
#   BOOT_ORDER      bootnames in the order they are tried, e.g. "A B"
#   BOOT_<X>_LEFT   boot attempts left for slot X (hex, as setexpr writes)
# The first slot in BOOT_ORDER with attempts left is chosen and one attempt
# is counted down before the environment is saved; userspace refills the
# counter with "didymos status mark-good" after a healthy boot. A slot that
# used up its attempts is passed over: that is the fall back. When no slot
# has attempts left nothing is booted.
#
# Board settings (set them in the default environment):
#   didymos_load    command that loads slot ${didymos_slot}'s kernel etc.
#                   and boots it, e.g.
#                   "load mmc 0:${didymos_part} ${kernel_addr_r} /boot/Image; booti ${kernel_addr_r} - ${fdt_addr}"
#   didymos_part_A, didymos_part_B   partition of each slot (optional)
#   bootargs_base   kernel arguments besides didymos.slot=
# Build:  mkimage -A arm -T script -C none -n didymos -d boot.cmd boot.scr

test -n "${BOOT_ORDER}" || setenv BOOT_ORDER "A B"
test -n "${BOOT_A_LEFT}" || setenv BOOT_A_LEFT 3
test -n "${BOOT_B_LEFT}" || setenv BOOT_B_LEFT 0

setenv didymos_slot
for BOOT_SLOT in "${BOOT_ORDER}"; do
  if test -n "${didymos_slot}"; then
    true
  elif test "x${BOOT_SLOT}" = "xA"; then
    if test ${BOOT_A_LEFT} -gt 0; then
      setexpr BOOT_A_LEFT ${BOOT_A_LEFT} - 1
      setenv didymos_slot A
      setenv didymos_part ${didymos_part_A}
    fi
  elif test "x${BOOT_SLOT}" = "xB"; then
    if test ${BOOT_B_LEFT} -gt 0; then
      setexpr BOOT_B_LEFT ${BOOT_B_LEFT} - 1
      setenv didymos_slot B
      setenv didymos_part ${didymos_part_B}
    fi
  fi
done

if test -n "${didymos_slot}"; then
  echo "didymos: booting slot ${didymos_slot}"
  setenv bootargs "${bootargs_base} didymos.slot=${didymos_slot}"
  saveenv
  run didymos_load
else
  echo "didymos: no slot has boot attempts left (BOOT_ORDER=${BOOT_ORDER})"
fi
