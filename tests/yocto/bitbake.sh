#!/usr/bin/env bash
# Run by tests/yocto/run as the unprivileged build user (bitbake refuses
# root): real bitbake on one poky snapshot, its output kept for
# check_bitbake.py.
#
#   bitbake.sh WORK     WORK holds poky/, src/ (the didymos tree) and
#                       local.conf.append; output goes to WORK/out
set -uo pipefail
work=$1
out=$work/out
cd "$work" || exit 1
export LANG=en_US.UTF-8 LC_ALL=en_US.UTF-8 HOME=$work/home
# One bitbake server for all the commands below, so they share its parse.
export BB_SERVER_TIMEOUT=120
set +u # oe-init-build-env reads unset variables
# shellcheck disable=SC1091
. poky/oe-init-build-env build >/dev/null || { echo "oe-init-build-env failed"; exit 1; }
set -u
# As docs/yocto.md says: the layer (and here the product layer) added with
# bitbake-layers, the documented lines appended to local.conf.
bitbake-layers add-layer "$work/src/yocto/meta-didymos" "$work/src/tests/yocto/meta-product" \
  >"$out/add-layer.log" 2>&1 || { cat "$out/add-layer.log"; echo "bitbake-layers add-layer failed"; exit 1; }
cat "$work/local.conf.append" >>conf/local.conf

run() { # NAME COMMAND... : output in $out/NAME.log, exit status in $out/NAME.rc
  local name=$1
  shift
  "$@" >"$out/$name.log" 2>&1
  echo $? >"$out/$name.rc"
}
run parse bitbake -p
# Nothing changed, so nothing may be parsed again.
run reparse bitbake -p
run graph bitbake -g didymos didymos-native nativesdk-didymos didymos-initramfs initramfs-module-didymos \
  didymos-bundle-minimal didymos-image-minimal product-image
mv task-depends.dot pn-buildlist "$out/"
for recipe in didymos didymos-native didymos-bundle-minimal product-image linux-yocto grub-efi; do
  run "env-$recipe" bitbake -e "$recipe"
done
# The distro feature's old name is refused with a message saying the new one.
printf 'DISTRO_FEATURES:append = " didymos"\n' >"$out/old-feature.conf"
run old-feature bitbake -R "$out/old-feature.conf" -e -b "$work/src/yocto/meta-didymos/recipes-didymos/didymos/didymos_git.bb"
# A build from a local checkout (EXTERNALSRC) takes that checkout's crates:
# a checkout whose Cargo.lock has one registry crate.
mkdir -p "$work/checkout"
cat >"$work/checkout/Cargo.lock" <<'LOCK'
version = 4

[[package]]
name = "didymos"
version = "0.1.0"
dependencies = [
 "itoa",
]

[[package]]
name = "itoa"
version = "1.0.19"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "3bd1574e617a9a6c1f8f8181bd7e841e1f20e4277607ef28945765188d6284d4"
LOCK
printf 'INHERIT += "externalsrc"\nEXTERNALSRC:pn-didymos = "%s"\n' "$work/checkout" >"$out/externalsrc.conf"
run env-externalsrc bitbake -R "$out/externalsrc.conf" -e -b "$work/src/yocto/meta-didymos/recipes-didymos/didymos/didymos_git.bb"
bitbake -m >/dev/null 2>&1
exit 0
