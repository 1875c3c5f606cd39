#!/usr/bin/env bash
# Two versions of a realistic root filesystem for the benchmarks, cached in
# bench/cache/: a Debian 12 "minbase" system (v1) and the same system one
# product release later (v2: a few packages added and /etc changed), as
# tar archives the way a build system hands a rootfs over.
#
#   bench/trees.sh          prints the two tarball paths (building them once)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=$here/cache
mkdir -p "$cache"
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

build() { # name, extra packages
  local name=$1 extra=$2 dir=$cache/$1
  [ -f "$cache/$name.tar" ] && return
  rm -rf "$dir"
  debootstrap --variant=minbase ${extra:+--include=$extra} bookworm "$dir" "$mirror" >"$cache/$name.log" 2>&1
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
  echo "didymos benchmark $name" >"$dir/etc/issue"
  tar -C "$dir" --numeric-owner --xattrs --xattrs-include='*' -cf "$cache/$name.tar.tmp" .
  mv "$cache/$name.tar.tmp" "$cache/$name.tar"
}

build v1 ""
build v2 "openssh-server,curl,less,iproute2"
echo "$cache/v1.tar $cache/v2.tar"
