# Builds the virtual device of the end-to-end tier: the guest root filesystem
# (Debian with systemd), the initramfs with didymos-setup-root, the bundles
# v1..v4, and a disk image with BIOS GRUB on which a factory step installed v1
# into slot A. Everything expensive is cached under $E2E_CACHE, keyed by the
# hash of its inputs. Sourced by tests/e2e/run after tests/lib/vm.sh.

# Bump when the device's layout or build steps change (part of the cache key).
E2E_FORMAT=3
E2E_SUITE=bookworm
E2E_COMPATIBLE=didymos-e2e-qemu
# Packages on top of debootstrap's minbase: the init system, the system bus,
# what didymos links against, tc (netem in scenario 6), and polkit (the
# update agent reboots through logind as an unprivileged user, scenario 7;
# debootstrap resolves no virtual packages, so logind is named: libpam-systemd).
E2E_PACKAGES=systemd-sysv,dbus,libssl3,iproute2,libpam-systemd,polkitd
# Partition sizes in MiB: boot (GRUB, per-slot kernel and initramfs), store
# (objects and images, ext4 with verity), data (bundles to install).
E2E_BOOT_MB=128
E2E_STORE_MB=1536
E2E_DATA_MB=512
# Kernel modules the initramfs loads, in this order (dependencies added).
# The network driver and netem (scenario 6) are loaded there too: the guest
# tree carries no modules.
E2E_MODULES=(virtio_blk crc32c_generic ext4 erofs overlay loop virtio_net sch_netem)

log() { printf '[e2e %s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
  printf '[e2e %s] FAILED: %s\n' "$(date +%T)" "$*" >&2
  exit 1
}

# The Debian mirror this machine's apt uses.
e2e_mirror() {
  local uri
  uri=$(grep -hoE '^(URIs:|deb) +[a-z]+://[^ ]+/debian/?( |$)' /etc/apt/sources.list.d/*.sources \
    /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -n1 | awk '{print $2}')
  [ -n "$uri" ] || die "no Debian mirror found in /etc/apt/sources.list*; debootstrap needs one"
  echo "$uri"
}

# debootstrap's minbase plus $E2E_PACKAGES, as a tarball (cached).
e2e_debootstrap() {
  local key tar dir
  key=$(echo "$E2E_SUITE $E2E_PACKAGES" | sha256sum | cut -c1-12)
  tar="$E2E_CACHE/debootstrap-$E2E_SUITE-$key.tar"
  if [ ! -s "$tar" ]; then
    dir="$E2E_CACHE/debootstrap.tmp"
    rm -rf "$dir"
    log "debootstrap $E2E_SUITE (minbase + $E2E_PACKAGES), once; the result is cached"
    debootstrap --variant=minbase --include="$E2E_PACKAGES" "$E2E_SUITE" "$dir" "$(e2e_mirror)" \
      >"$E2E_CACHE/debootstrap.log" 2>&1 ||
      die "debootstrap failed; see $E2E_CACHE/debootstrap.log"
    tar -C "$dir" --numeric-owner -cf "$tar.tmp" . || die "packing the debootstrap tree failed"
    mv "$tar.tmp" "$tar"
    rm -rf "$dir"
  fi
  E2E_DEBOOTSTRAP_TAR=$tar
}

# The development PKI the bundles are signed with and the device trusts: a
# CA and a code-signing certificate it issued, made once with openssl.
e2e_keys() {
  local d="$E2E_CACHE/pki"
  E2E_CERT=$d/signing.cert.pem
  E2E_KEY=$d/signing.key.pem
  E2E_KEYRING=$d/ca.cert.pem
  [ -s "$E2E_CERT" ] && [ -s "$E2E_KEY" ] && [ -s "$E2E_KEYRING" ] && return
  rm -rf "$d" && mkdir -p "$d"
  (
    cd "$d" &&
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
        -subj "/O=didymos e2e/CN=didymos e2e development CA" -keyout ca.key.pem -out ca.cert.pem \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign &&
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj "/O=didymos e2e/CN=didymos e2e development signer" -keyout signing.key.pem -out signing.csr &&
      printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=codeSigning\n' >leaf.ext &&
      openssl x509 -req -in signing.csr -CA ca.cert.pem -CAkey ca.key.pem -CAcreateserial -days 3650 \
        -extfile leaf.ext -out signing.cert.pem
  ) >"$E2E_CACHE/pki.log" 2>&1 || die "making the development PKI failed; see $E2E_CACHE/pki.log"
}

# The device's initramfs: busybox, didymos-setup-root, modules, the device's
# system.conf and keyring, and a small /init.
e2e_initramfs() {
  local out=$1 dir="$E2E_WORK/initramfs"
  vm_initramfs_begin "$dir" || die "initramfs: busybox"
  vm_initramfs_binary "$dir" "$BIN/didymos-setup-root" /usr/bin/didymos-setup-root || die "initramfs: setup-root"
  vm_initramfs_modules "$dir" "${E2E_MODULES[@]}" || die "initramfs: modules"
  mkdir -p "$dir/etc/didymos"
  cp "$E2E_DIR/rootfs/etc/didymos/system.conf" "$dir/etc/didymos/system.conf"
  cp "$E2E_KEYRING" "$dir/etc/didymos/keyring.pem"
  printf '%s\n' "${E2E_MODULES[@]}" >"$dir/etc/didymos/initramfs-modules"
  # The /init didymos ships for busybox initramfs images.
  install -m 755 "$REPO/initramfs/busybox/init" "$dir/init"
  vm_initramfs_pack "$dir" "$out" || die "initramfs: packing"
}

# A file of $2 MiB of deterministic pseudo-random bytes (seed $3).
e2e_noise() {
  openssl enc -aes-128-ctr -nosalt -pass "pass:$3" -pbkdf2 -in /dev/zero 2>/dev/null |
    head -c "$(($2 * 1024 * 1024))" >"$1"
}

# The common guest tree: debootstrap + trimming + didymos + the test units.
e2e_rootfs_base() {
  local dir=$1 initrd=$2
  rm -rf "$dir"
  mkdir -p "$dir"
  tar -C "$dir" -xf "$E2E_DEBOOTSTRAP_TAR" || die "unpacking $E2E_DEBOOTSTRAP_TAR"
  # What a device image does not carry: documentation, locales, character
  # set converters, time zones other than UTC, perl (only the package
  # manager's scripts use it), and /var's content (setup-root mounts the
  # persistent /var over it). Half of the files, so the first install is
  # twice as fast under emulation.
  rm -rf "$dir"/usr/share/{doc,man,info,locale,i18n,perl5,bash-completion} \
    "$dir"/usr/lib/x86_64-linux-gnu/{gconv,perl-base} "$dir"/usr/bin/perl* "$dir"/var/*/*
  find "$dir/usr/share/zoneinfo" -mindepth 1 -maxdepth 1 ! -name Etc ! -name UTC -exec rm -rf {} +
  rm -f "$dir"/etc/systemd/system/timers.target.wants/* "$dir"/etc/systemd/system/getty.target.wants/*
  rm -f "$dir"/etc/systemd/system/multi-user.target.wants/e2scrub_reap.service
  # No consoles to log in on (the test talks to its agent on /dev/hvc0).
  ln -sf /dev/null "$dir/etc/systemd/system/getty.target"
  ln -sf /dev/null "$dir/etc/systemd/system/serial-getty@.service"
  echo didymos-e2e >"$dir/etc/hostname"
  : >"$dir/etc/machine-id"
  mkdir -p "$dir/boot" "$dir/data"
  cp -a "$E2E_DIR/rootfs/." "$dir/"
  cp "$E2E_KEYRING" "$dir/etc/didymos/keyring.pem"
  # didymos itself, with its D-Bus and systemd files, where a package puts them.
  strip -o "$dir/usr/bin/didymos" "$BIN/didymos" && chmod 755 "$dir/usr/bin/didymos"
  install -m 644 "$REPO/dbus/org.didymos.Installer1.conf" "$dir/usr/share/dbus-1/system.d/org.didymos.Installer1.conf"
  mkdir -p "$dir/usr/share/dbus-1/system-services"
  install -m 644 "$REPO/dbus/org.didymos.Installer1.service" "$dir/usr/share/dbus-1/system-services/org.didymos.Installer1.service"
  install -m 644 "$REPO/systemd/didymos.service" "$REPO/systemd/didymos-mark-good.service" "$dir/usr/lib/systemd/system/"
  # The update agent: its unit, bus policy, polkit rule and user.
  install -m 644 "$REPO/systemd/didymos-agent.service" "$dir/usr/lib/systemd/system/"
  install -m 644 "$REPO/dbus/org.didymos.Agent1.conf" "$dir/usr/share/dbus-1/system.d/org.didymos.Agent1.conf"
  mkdir -p "$dir/usr/share/polkit-1/rules.d" "$dir/usr/lib/sysusers.d"
  install -m 644 "$REPO/polkit/didymos-agent.rules" "$dir/usr/share/polkit-1/rules.d/didymos-agent.rules"
  install -m 644 "$REPO/systemd/didymos-agent.sysusers" "$dir/usr/lib/sysusers.d/didymos-agent.conf"
  systemd-sysusers --root="$dir" "$dir/usr/lib/sysusers.d/didymos-agent.conf" >/dev/null ||
    die "systemd-sysusers for the agent's user"
  # Enabled: mark-good, and the test's units. The daemon is not enabled: it
  # starts by D-Bus activation.
  local unit target
  for unit in didymos-mark-good.service:multi-user.target e2e-agent.service:multi-user.target \
    e2e-mounts.service:local-fs.target didymos-agent.service:multi-user.target \
    e2e-inhibit.service:multi-user.target e2e-network.service:multi-user.target; do
    target=${unit#*:} unit=${unit%%:*}
    mkdir -p "$dir/etc/systemd/system/$target.wants"
    ln -sf "/usr/lib/systemd/system/$unit" "$dir/etc/systemd/system/$target.wants/$unit"
  done
  for unit in e2e-mounts.service e2e-agent.service e2e-health.service e2e-inhibit.service \
    e2e-network.service; do
    mv "$dir/etc/systemd/system/$unit" "$dir/usr/lib/systemd/system/$unit"
  done
  mkdir -p "$dir/etc/systemd/system/boot-complete.target.requires"
  ln -sf /usr/lib/systemd/system/e2e-health.service "$dir/etc/systemd/system/boot-complete.target.requires/"
  # The slot's boot files, installed to the boot partition with the slot.
  cp "$VM_VMLINUZ" "$dir/boot/vmlinuz"
  cp "$initrd" "$dir/boot/initrd.img"
  # A file that every version carries unchanged (the tampering scenario).
  mkdir -p "$dir/usr/share/didymos-e2e"
  e2e_noise "$dir/usr/share/didymos-e2e/canary" 1 canary
}

# One version of the guest tree: os-release and the version's own files.
e2e_rootfs_version() {
  local base=$1 dir=$2 version=$3
  rm -rf "$dir"
  cp -a "$base" "$dir"
  cat >"$dir/usr/lib/os-release" <<EOF
PRETTY_NAME="didymos e2e device $version"
NAME="didymos e2e device"
ID=didymos-e2e
ID_LIKE=debian
VERSION="$version"
VERSION_ID="$version"
EOF
  echo "$version" >"$dir/usr/share/didymos-e2e/version"
  case $version in
    3) touch "$dir/usr/lib/didymos-e2e/broken" ;;
    4)
      # Enough new data that an install takes a while (the power-cut scenario).
      local i
      for i in $(seq 1 12); do e2e_noise "$dir/usr/share/didymos-e2e/bulk-$i" 4 "bulk-$i"; done
      ;;
    5)
      # Installed over HTTP (scenario 6): new data in small and large files.
      local i
      for i in $(seq 1 6); do e2e_noise "$dir/usr/share/didymos-e2e/net-$i" 2 "net-$i"; done
      e2e_noise "$dir/usr/share/didymos-e2e/net-large" 8 net-large
      # Holds the reboot back for 60 s after the update agent started (scenario 7).
      echo 60 >"$dir/usr/lib/didymos-e2e/inhibit"
      ;;
    6)
      # Found by the update agent (scenario 7); holds every reboot back.
      echo infinity >"$dir/usr/lib/didymos-e2e/inhibit"
      ;;
    7)
      # Found by the update agent after 6; its health check fails.
      touch "$dir/usr/lib/didymos-e2e/broken"
      ;;
  esac
}

e2e_bundle() {
  local rootfs=$1 out=$2 version=$3
  shift 3
  local base=() b
  for b in "$@"; do base+=(--base "$b"); done
  "$BIN/didymos" bundle create --rootfs "$rootfs" --output "$out" --cert "$E2E_CERT" --key "$E2E_KEY" \
    --compatible "$E2E_COMPATIBLE" --version "$version" --description "e2e device $version" \
    "${base[@]}" >"$out.log" 2>&1 || die "didymos bundle create $version failed: $(tail -n5 "$out.log")"
}

# A bundle extracted over the bundles it is a delta of: DIR holds the last
# one's image and every object, a --base for the next delta.
e2e_extracted() {
  local dir=$1 b
  shift
  rm -rf "$dir"
  for b in "$@"; do
    "$BIN/didymos" bundle extract --keyring "$E2E_KEYRING" "$b" "$dir" >"$dir.log" 2>&1 ||
      die "didymos bundle extract $b failed: $(tail -n5 "$dir.log")"
  done
  rm -f "$dir.log"
}

# The boot partition: GRUB's modules, its configuration with the shipped
# didymos fragment, an empty environment block and a directory per slot.
e2e_boot_partition() {
  local out=$1 dir="$E2E_WORK/bootpart"
  rm -rf "$dir"
  mkdir -p "$dir/grub/i386-pc" "$dir/A" "$dir/B"
  cp /usr/lib/grub/i386-pc/*.mod /usr/lib/grub/i386-pc/*.lst "$dir/grub/i386-pc/"
  grub-editenv "$dir/grub/grubenv" create
  # 4 KiB blocks: GRUB reads the kernel in far fewer requests than with 1 KiB.
  mke2fs -q -F -t ext2 -b 4096 -L boot -d "$dir" "$out" "${E2E_BOOT_MB}M" || die "mke2fs boot partition"
}

# The whole disk: MBR with GRUB's boot.img, core.img in the gap before the
# first partition, then boot, store and data partitions.
e2e_disk() {
  local out=$1 bundles=$2 w=$E2E_WORK
  e2e_boot_partition "$w/boot.part"
  rm -f "$w/store.part" "$w/data.part"
  mke2fs -q -F -t ext4 -b 4096 -O verity -L store "$w/store.part" "${E2E_STORE_MB}M" || die "mke2fs store partition"
  mke2fs -q -F -t ext4 -b 4096 -L data -d "$bundles" "$w/data.part" "${E2E_DATA_MB}M" || die "mke2fs data partition"
  grub-mkimage -O i386-pc -o "$w/core.img" -p '(hd0,msdos1)/grub' biosdisk part_msdos ext2 ||
    die "grub-mkimage failed"
  local s1=2048 n1=$((E2E_BOOT_MB * 2048)) n2=$((E2E_STORE_MB * 2048)) n3=$((E2E_DATA_MB * 2048))
  local s2=$((s1 + n1)) s3=$((s1 + n1 + n2))
  rm -f "$out"
  truncate -s $(((s3 + n3) * 512)) "$out"
  printf 'label: dos\nstart=%d, size=%d, type=83, bootable\nstart=%d, size=%d, type=83\nstart=%d, size=%d, type=83\n' \
    $s1 $n1 $s2 $n2 $s3 $n3 | sfdisk -q "$out" || die "sfdisk failed"
  dd if=/usr/lib/grub/i386-pc/boot.img of="$out" bs=440 count=1 conv=notrunc status=none
  dd if="$w/core.img" of="$out" bs=512 seek=1 conv=notrunc status=none
  dd if="$w/boot.part" of="$out" bs=512 seek=$s1 conv=notrunc,sparse status=none
  dd if="$w/store.part" of="$out" bs=512 seek=$s2 conv=notrunc,sparse status=none
  dd if="$w/data.part" of="$out" bs=512 seek=$s3 conv=notrunc,sparse status=none
  rm -f "$w/boot.part" "$w/store.part" "$w/data.part"
  E2E_STORE_OFFSET=$((s2 * 512))
  E2E_DATA_OFFSET=$((s3 * 512))
}

# Writes GRUB's configuration and the shipped didymos script into the boot
# partition of a copy of the provisioned disk. Done for every run, so the
# (slow) factory step does not depend on them.
e2e_grub_config() {
  local disk=$1
  debugfs -w -f - "$disk?offset=$((2048 * 512))" >"$E2E_WORK/debugfs-grub.log" 2>&1 <<EOF || die "writing grub.cfg into $disk failed"
cd /grub
rm grub.cfg
rm didymos.cfg
write $E2E_DIR/grub.cfg grub.cfg
write $REPO/boot/grub/didymos.cfg didymos.cfg
EOF
  debugfs -R "cat /grub/grub.cfg" "$disk?offset=$((2048 * 512))" 2>/dev/null | cmp -s - "$E2E_DIR/grub.cfg" ||
    die "grub.cfg on the boot partition differs from $E2E_DIR/grub.cfg after writing it"
}

# The factory step: boot the device's kernel with a provisioning initramfs
# that installs v1 with didymos, as a production line would.
e2e_factory() {
  local disk=$1 dir="$E2E_WORK/factory"
  vm_initramfs_begin "$dir" || die "factory initramfs: busybox"
  vm_initramfs_binary "$dir" "$BIN/didymos" /usr/bin/didymos || die "factory initramfs: didymos"
  vm_initramfs_modules "$dir" "${E2E_MODULES[@]}" || die "factory initramfs: modules"
  mkdir -p "$dir/etc/didymos"
  cp "$E2E_DIR/rootfs/etc/didymos/system.conf" "$dir/etc/didymos/system.conf"
  cp "$E2E_KEYRING" "$dir/etc/didymos/keyring.pem"
  cp "$E2E_DIR/factory-init" "$dir/init"
  chmod 755 "$dir/init"
  vm_initramfs_pack "$dir" "$E2E_WORK/factory.img" || die "factory initramfs: packing"
  log "factory: installing v1 into the empty device (provisioning VM)"
  timeout 600 qemu-system-x86_64 -machine pc,accel=tcg -m 1024 -smp 2 -nographic -no-reboot \
    -kernel "$VM_VMLINUZ" -initrd "$E2E_WORK/factory.img" -append "console=ttyS0 quiet panic=-1" \
    -drive "file=$disk,format=raw,if=virtio" >"$E2E_WORK/factory.log" 2>&1 </dev/null
  grep -q '^E2E-FACTORY-DONE 0' "$E2E_WORK/factory.log" ||
    die "factory install failed; console: $(tr -d '\r' <"$E2E_WORK/factory.log" | grep -v '^\[' | tail -n 20)"
}

# Everything, cached by the hash of the inputs. Sets E2E_PRISTINE (the
# provisioned disk) and E2E_STORE_OFFSET.
e2e_build() {
  vm_kernel "$VM_CACHE" || die "kernel"
  e2e_debootstrap
  e2e_keys
  local key
  key=$( (
    echo "$E2E_FORMAT $E2E_SUITE $E2E_PACKAGES ${E2E_MODULES[*]} $E2E_BOOT_MB $E2E_STORE_MB $E2E_DATA_MB"
    vm_hash "$E2E_DEBOOTSTRAP_TAR" "$BIN/didymos" "$BIN/didymos-setup-root" "$E2E_DIR/rootfs" \
      "$REPO/initramfs/busybox/init" "$E2E_DIR/factory-init" "$REPO/dbus" "$REPO/systemd" \
      "$REPO/polkit" "$E2E_KEYRING" "$E2E_CERT" "$VM_VMLINUZ" "$E2E_DIR/lib/build.sh"
  ) | sha256sum | cut -c1-16)
  local dev="$E2E_CACHE/device-$key"
  E2E_PRISTINE=$dev/disk.raw
  E2E_WWW=$dev/www
  if [ -s "$dev/disk.raw" ] && [ -s "$dev/store-offset" ]; then
    E2E_STORE_OFFSET=$(cat "$dev/store-offset")
    E2E_DATA_OFFSET=$(((2048 + (E2E_BOOT_MB + E2E_STORE_MB) * 2048) * 512))
    log "device $key from the cache"
    return
  fi
  rm -rf "$E2E_CACHE"/device-*
  local w=$E2E_WORK
  log "building the device $key: initramfs, guest trees, bundles, disk"
  e2e_initramfs "$w/initrd.img"
  e2e_rootfs_base "$w/rootfs-base" "$w/initrd.img"
  mkdir -p "$w/bundles/bundles"
  local v
  for v in 1 2 3 4 5 6 7; do e2e_rootfs_version "$w/rootfs-base" "$w/rootfs-$v" "$v"; done
  rm -rf "$w/rootfs-base"
  log "bundles: v1 full, v2 delta on v1, v3 and v4 delta on v2"
  e2e_bundle "$w/rootfs-1" "$w/bundles/bundles/v1.raucb" 1
  e2e_bundle "$w/rootfs-2" "$w/bundles/bundles/v2.raucb" 2 "$w/bundles/bundles/v1.raucb"
  # v2 is a delta bundle itself, whose image is a delta against v1's: the
  # base of v3 and v4 is v2 as extracted over v1 (v2's image and objects;
  # giving v1 as a second --base would also leave out what only v1 has,
  # which a device that installed v3 over v1 no longer holds).
  e2e_extracted "$w/base-v2" "$w/bundles/bundles/v1.raucb" "$w/bundles/bundles/v2.raucb"
  e2e_bundle "$w/rootfs-3" "$w/bundles/bundles/v3.raucb" 3 "$w/base-v2"
  e2e_bundle "$w/rootfs-4" "$w/bundles/bundles/v4.raucb" 4 "$w/base-v2"
  # v5 is served by nginx on the host (scenario 6), a full bundle: the device
  # fetches only what it lacks.
  mkdir -p "$w/www"
  e2e_bundle "$w/rootfs-5" "$w/www/v5.raucb" 5
  # v6 and v7 are the update agent's (scenario 7), served by nginx too.
  e2e_bundle "$w/rootfs-6" "$w/www/v6.raucb" 6 "$w/www/v5.raucb"
  e2e_extracted "$w/base-v6" "$w/www/v5.raucb" "$w/www/v6.raucb"
  e2e_bundle "$w/rootfs-7" "$w/www/v7.raucb" 7 "$w/base-v6"
  rm -rf "$w/base-v2" "$w/base-v6"
  rm -f "$w"/bundles/bundles/*.log "$w"/www/*.log
  # The canary's digest, to find its object on the store partition later.
  fsverity digest --compact "$w/rootfs-1/usr/share/didymos-e2e/canary" >"$w/canary.digest" ||
    die "fsverity digest of the canary"
  rm -rf "$w"/rootfs-?
  e2e_disk "$w/disk.raw" "$w/bundles"
  e2e_factory "$w/disk.raw"
  rm -rf "$dev.tmp"
  mkdir -p "$dev.tmp"
  mv "$w/disk.raw" "$dev.tmp/disk.raw"
  mv "$w/www" "$dev.tmp/www"
  cp "$w/canary.digest" "$dev.tmp/canary.digest"
  echo "$E2E_STORE_OFFSET" >"$dev.tmp/store-offset"
  mv "$dev.tmp" "$dev"
}
