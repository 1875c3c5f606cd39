#!/usr/bin/env bash
# Installs the Debian packages the build and every test tier need.
# Idempotent; run as root (CI is root). Skips apt when everything is present.
set -euo pipefail

packages=(
  # build (g++: libfuzzer-sys compiles libFuzzer for the fuzz targets)
  pkg-config libssl-dev openssl tar g++
  # tier 1: real peers
  dbus-daemon dbus-bin libglib2.0-bin grub-common libubootenv-tool fsverity nginx
  # tier 2: network faults for the HTTP installs (namespaces, loss, rate)
  iproute2 nftables procps tinyproxy
  # tier 1: systemd 257's busctl, fetched by tests/busctl/fetch
  curl gpgv xz-utils debian-archive-keyring
  # tier 2: mounts and filesystems
  erofs-utils e2fsprogs attr libcap2-bin util-linux
  # tier 3 and e2e: the virtual device
  qemu-system-x86 qemu-utils busybox-static grub-pc-bin grub-efi-amd64-bin grub-emu ovmf
  u-boot-tools u-boot-qemu qemu-system-arm dosfstools mtools cpio kmod debootstrap fdisk openssl binutils
  # tier 3: initramfs images made by the real generator
  initramfs-tools
  # benchmarks
  squashfs-tools xdelta3 zstd time
  # bench/fleet-sim plots with gnuplot
  gnuplot-nox
  # tar writers for the tar input tests
  libarchive-tools
  # container image input: podman builds, saves and exports the test images,
  # skopeo reads containers-storage: for didymos
  podman skopeo
  # yocto layer lint
  python3-pip python3-venv
  # yocto: real bitbake on the poky snapshots (its host tools and locale)
  chrpath diffstat gawk git lz4 zstd file wget cpio patch bzip2 perl g++ make rpcsvc-proto locales
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "tests/deps.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Never remove or downgrade what the machine already has: apt fails
  # instead (--no-remove). QEMU's packages must all be of one version, so
  # when one of them is already installed from bookworm-backports (a newer
  # qemu-utils, say), the missing ones are taken from bookworm-backports
  # too, and with them what they need at a newer version than bookworm has
  # (qemu-system-common, qemu-system-data, seabios): a source list and a pin
  # of this run's own, leaving /etc/apt as it is.
  apt_opts=(-y -qq --no-install-recommends --no-remove)
  bpo_qemu=$(dpkg-query -W -f='${Package} ${Version}\n' 'qemu-*' 2>/dev/null | awk '$2 ~ /~bpo12/ {print $1; exit}')
  if [ -n "$bpo_qemu" ]; then
    echo "tests/deps.sh: $bpo_qemu is from bookworm-backports; QEMU packages come from there too"
    bpo_list=$(mktemp)
    bpo_pin=$(mktemp)
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-backports main" >"$bpo_list"
    printf 'Package: qemu-* seabios ipxe-qemu\nPin: release n=bookworm-backports\nPin-Priority: 990\n' >"$bpo_pin"
    apt_opts+=(-o "Dir::Etc::sourcelist=$bpo_list" -o "Dir::Etc::preferences=$bpo_pin")
    apt-get -o "Dir::Etc::sourcelist=$bpo_list" update -qq
  fi
  apt-get install "${apt_opts[@]}" "${missing[@]}"
  [ -z "${bpo_list:-}" ] || rm -f "$bpo_list" "$bpo_pin"
fi

# bitbake switches to en_US.UTF-8 and refuses to start without it.
if ! locale -a 2>/dev/null | grep -qix 'en_US.utf-*8'; then
  echo "tests/deps.sh: generating the en_US.UTF-8 locale"
  sed -i 's/^# *\(en_US.UTF-8 UTF-8\)/\1/' /etc/locale.gen
  grep -q '^en_US.UTF-8 UTF-8' /etc/locale.gen || echo 'en_US.UTF-8 UTF-8' >>/etc/locale.gen
  locale-gen >/dev/null
fi
