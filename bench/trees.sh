#!/usr/bin/env bash
# Root filesystems for the benchmarks, cached in bench/cache/ as tar archives
# the way a build system hands a rootfs over.
#
#   bench/trees.sh          v1 and v2: a Debian 12 "minbase" system and the same
#                           system one product release later (a few packages
#                           added, /etc changed); prints the two tarball paths
#   bench/trees.sh pairs    the two update pairs of bench/delta.sh (below);
#                           prints "k1.tar k2.tar l1.tar l2.tar"
#
# The update pairs (built as root: debootstrap, then apt in a chroot):
#   k1 → k2   a kernel package upgrade between two Debian point releases plus
#             one added package: minbase with linux-image-amd64 from bookworm
#             (the point release), then the kernel of bookworm-security (the
#             next point release's; a new ABI number, so /usr/lib/modules/<ver>
#             is renamed) with the old kernel removed, and `less` added.
#   l1 → l2   a handful of library security fixes: minbase with a few common
#             libraries from bookworm, then `apt-get upgrade` from
#             bookworm-security (whatever security fixes it holds).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=$here/cache
mkdir -p "$cache"
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

pack() { # name
  local name=$1 dir=$cache/$1
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin
  echo "didymos benchmark $name" >"$dir/etc/issue"
  tar -C "$dir" --numeric-owner --xattrs --xattrs-include='*' -cf "$cache/$name.tar.tmp" .
  mv "$cache/$name.tar.tmp" "$cache/$name.tar"
}

build() { # name, extra packages
  local name=$1 extra=$2 dir=$cache/$1
  [ -f "$cache/$name.tar" ] && return
  rm -rf "$dir"
  debootstrap --variant=minbase ${extra:+--include=$extra} bookworm "$dir" "$mirror" >"$cache/$name.log" 2>&1
  pack "$name"
}

# Runs apt-get in the chroot DIR with bookworm-security enabled.
in_chroot() { # dir, command...
  local dir=$1; shift
  cat >"$dir/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $security bookworm-security main
SOURCES
  mount -t proc proc "$dir/proc"
  mount --bind /dev "$dir/dev"
  local rc=0
  chroot "$dir" env DEBIAN_FRONTEND=noninteractive LC_ALL=C "$@" || rc=$?
  umount "$dir/dev" "$dir/proc"
  return $rc
}

derive() { # from, to, script
  local from=$1 to=$2 script=$3
  [ -f "$cache/$to.tar" ] && return
  rm -rf "${cache:?}/$to"
  cp -a "$cache/$from" "$cache/$to"
  in_chroot "$cache/$to" sh -ec "$script" >"$cache/$to.log" 2>&1
  # The image a build system would produce: the sources it used are not part of it.
  printf 'deb %s bookworm main\n' "$mirror" >"$cache/$to/etc/apt/sources.list"
  pack "$to"
}

if [ "${1:-}" = pairs ]; then
  build k1 linux-image-amd64
  derive k1 k2 'apt-get update
    old=$(dpkg-query -W -f "\${Package}\n" "linux-image-6*" | sort)
    apt-get install -y linux-image-amd64 less
    for p in $old; do
      [ "$p" = "$(dpkg-query -W -f "\${Package}\n" "linux-image-6*" | sort | tail -n1)" ] || apt-get purge -y "$p"
    done
    dpkg-query -W "linux-image-6*"'
  build l1 libssl3,libexpat1,libxml2,libgnutls30,libcurl4
  derive l1 l2 'apt-get update
    apt-get upgrade -y
    grep " upgrade " /var/log/dpkg.log'
  echo "$cache/k1.tar $cache/k2.tar $cache/l1.tar $cache/l2.tar"
  exit 0
fi

build v1 ""
build v2 "openssh-server,curl,less,iproute2"
echo "$cache/v1.tar $cache/v2.tar"
