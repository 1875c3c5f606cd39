# Shared helpers for the test tiers that boot virtual machines (tests/vm,
# tests/e2e): fetching Debian's kernel and building busybox initramfs images.
# Source it from bash; every function fails loudly (non-zero status and a
# message on stderr) instead of leaving a half-made result behind.
#
#   vm_kernel CACHE            Debian's 6.12 kernel, unpacked under CACHE/kernel
#                              (downloaded once). Sets VM_KERNEL_RELEASE,
#                              VM_VMLINUZ and VM_MODULES (the modules directory).
#   vm_initramfs_begin DIR     start an initramfs tree in DIR (busybox, /dev,
#                              /proc, /sys, /run, /tmp)
#   vm_initramfs_binary DIR BIN [DEST]
#                              copy an executable (stripped) and the shared
#                              libraries it needs into the tree
#   vm_initramfs_modules DIR MODULE...
#                              copy kernel modules and their dependencies to
#                              DIR/lib/modules/<release> (with modules.dep, for
#                              modprobe) and write DIR/etc/modules.order (the
#                              load order, for insmod)
#   vm_initramfs_pack DIR OUT  write the tree as a gzip'd newc cpio archive
#   vm_hash FILE|DIR...        a short content hash of files and trees (cache keys)

# Which kernel: the newest Debian 6.12 build without a signature wrapper.
VM_KERNEL_PATTERN='^linux-image-6\.12\.[0-9.]+\+deb[0-9]+-amd64-unsigned$'

vm_die() {
  echo "vm.sh: $*" >&2
  return 1
}

vm_kernel() {
  local cache=$1 dir deb pkg
  dir="$cache/kernel"
  mkdir -p "$cache"
  if ! compgen -G "$dir/boot/vmlinuz-*" >/dev/null; then
    deb=$(compgen -G "$cache/linux-image-6.12.*-amd64-unsigned_*.deb" | sort -V | tail -n1 || true)
    if [ -z "$deb" ]; then
      pkg=$(apt-cache search --names-only "$VM_KERNEL_PATTERN" | awk '{print $1}' | sort -V | tail -n1)
      if [ -z "$pkg" ]; then
        apt-get update -qq >&2 || true
        pkg=$(apt-cache search --names-only "$VM_KERNEL_PATTERN" | awk '{print $1}' | sort -V | tail -n1)
      fi
      [ -n "$pkg" ] || vm_die "no Debian package matches $VM_KERNEL_PATTERN (apt-cache search); check the apt sources" || return 1
      (cd "$cache" && apt-get download -q "$pkg" >&2) || vm_die "apt-get download $pkg failed" || return 1
      deb=$(compgen -G "$cache/${pkg}_*.deb" | sort -V | tail -n1)
    fi
    rm -rf "$dir.tmp"
    dpkg-deb -x "$deb" "$dir.tmp" || vm_die "dpkg-deb -x $deb failed" || return 1
    rm -rf "$dir"
    mv "$dir.tmp" "$dir"
  fi
  VM_VMLINUZ=$(compgen -G "$dir/boot/vmlinuz-*" | sort -V | tail -n1)
  VM_KERNEL_RELEASE=${VM_VMLINUZ##*/vmlinuz-}
  if [ -d "$dir/lib/modules/$VM_KERNEL_RELEASE" ]; then
    VM_MODULES="$dir/lib/modules/$VM_KERNEL_RELEASE"
  else
    VM_MODULES="$dir/usr/lib/modules/$VM_KERNEL_RELEASE"
  fi
  [ -d "$VM_MODULES" ] || vm_die "kernel $VM_KERNEL_RELEASE has no modules directory under $dir" || return 1
  if [ ! -s "$VM_MODULES/modules.dep" ]; then
    depmod -b "$dir" "$VM_KERNEL_RELEASE" || vm_die "depmod for $VM_KERNEL_RELEASE failed" || return 1
  fi
}

vm_initramfs_begin() {
  local dir=$1 busybox
  busybox=$(command -v busybox) || vm_die "busybox not found (Debian package busybox-static)" || return 1
  file -L "$busybox" 2>/dev/null | grep -q 'statically linked' ||
    [ "$(ldd "$busybox" 2>&1 | grep -c '=>')" = 0 ] ||
    vm_die "$busybox is not statically linked; install busybox-static" || return 1
  rm -rf "$dir"
  mkdir -p "$dir"/{bin,sbin,etc,dev,proc,sys,run,tmp,lib,usr/bin,usr/sbin}
  cp "$busybox" "$dir/bin/busybox"
  local applet
  for applet in $("$busybox" --list); do
    [ -e "$dir/bin/$applet" ] || ln -s busybox "$dir/bin/$applet"
  done
}

vm_initramfs_binary() {
  local dir=$1 bin=$2 dest=${3:-/usr/bin/$(basename "$2")} lib
  [ -x "$bin" ] || vm_die "$bin is not an executable (build it first)" || return 1
  mkdir -p "$dir$(dirname "$dest")"
  # Without debug information (a debug build is mostly that).
  strip -o "$dir$dest" "$bin" 2>/dev/null || cp "$bin" "$dir$dest"
  # Shared libraries, with the paths the dynamic linker looks them up under.
  for lib in $(ldd "$bin" 2>/dev/null | grep -o '/[^ ]*' | sort -u); do
    mkdir -p "$dir$(dirname "$lib")"
    cp -L "$lib" "$dir$lib"
  done
}

vm_initramfs_modules() {
  local dir=$1
  shift
  [ -n "${VM_MODULES:-}" ] || vm_die "vm_initramfs_modules: call vm_kernel first" || return 1
  local mod path dep order=() seen=" "
  # modules.dep lines are "path: dep dep…"; dependencies first, each once.
  _vm_mod_add() {
    local p=$1 line d
    case "$seen" in *" $p "*) return 0 ;; esac
    line=$(grep -m1 "^$p:" "$VM_MODULES/modules.dep") || vm_die "module $p is not in modules.dep" || return 1
    for d in ${line#*:}; do _vm_mod_add "$d" || return 1; done
    seen="$seen$p "
    order+=("$p")
  }
  for mod in "$@"; do
    if grep -qE "/$mod\.ko(\.[a-z]+)?$" "$VM_MODULES/modules.builtin" 2>/dev/null; then
      continue
    fi
    path=$(grep -m1 -oE "^[^:]*/$mod\.ko(\.[a-z]+)?:" "$VM_MODULES/modules.dep") ||
      vm_die "kernel $VM_KERNEL_RELEASE has no module $mod" || return 1
    _vm_mod_add "${path%:}" || return 1
  done
  # Decompressed (busybox cannot read .ko.xz), at their paths under
  # /lib/modules/<release>, with a modules.dep for modprobe.
  local root="$dir/lib/modules/$VM_KERNEL_RELEASE" ko
  mkdir -p "$root" "$dir/etc"
  cp "$VM_MODULES"/modules.builtin* "$VM_MODULES/modules.order" "$root/" 2>/dev/null
  : >"$dir/etc/modules.order"
  for path in "${order[@]}"; do
    ko=${path%.xz}
    ko=${ko%.zst}
    mkdir -p "$root/$(dirname "$ko")"
    case "$path" in
      *.xz) xz -dc "$VM_MODULES/$path" >"$root/$ko" ;;
      *.zst) zstd -qdc "$VM_MODULES/$path" >"$root/$ko" ;;
      *) cp "$VM_MODULES/$path" "$root/$ko" ;;
    esac
    echo "/lib/modules/$VM_KERNEL_RELEASE/$ko" >>"$dir/etc/modules.order"
  done
  depmod -b "$dir" "$VM_KERNEL_RELEASE" || vm_die "depmod in $dir failed" || return 1
}

vm_initramfs_pack() {
  local dir=$1 out=$2
  (cd "$dir" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) |
    gzip -1 >"$out.tmp" || vm_die "packing $dir into $out failed" || return 1
  mv "$out.tmp" "$out"
}

vm_hash() {
  local p
  for p in "$@"; do
    if [ -d "$p" ]; then
      (cd "$p" && find . -type f -o -type l | LC_ALL=C sort | while read -r f; do
        if [ -L "$f" ]; then echo "$f -> $(readlink "$f")"; else echo "$f $(sha256sum <"$f")"; fi
      done)
    else
      sha256sum <"$p"
    fi
  done | sha256sum | cut -c1-16
}
