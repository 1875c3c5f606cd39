#!/bin/sh
# Makes a small example root filesystem for bundles, tests and the demo.
#
#   bundles/example-rootfs.sh DIR [VERSION]
#
# A minimal FHS tree: /etc/os-release naming VERSION, a busybox binary with
# its applet links when busybox-static is installed (else a shell script
# stand-in), a few data files of different sizes. Owners are the caller's;
# pack it with `tar --numeric-owner --owner=0 --group=0 --xattrs` to hand a
# root-owned tree to `didymos bundle create` without being root.
set -eu
dir=${1:?usage: $0 DIR [VERSION]}
version=${2:-1.0}
mkdir -p "$dir"/etc "$dir"/bin "$dir"/sbin "$dir"/usr/bin "$dir"/usr/share/example \
  "$dir"/dev "$dir"/proc "$dir"/sys "$dir"/run "$dir"/tmp "$dir"/var/lib "$dir"/boot
chmod 1777 "$dir"/tmp
cat > "$dir"/etc/os-release <<OS
NAME="didymos example"
ID=didymos-example
VERSION_ID=$version
PRETTY_NAME="didymos example $version"
OS
echo didymos > "$dir"/etc/hostname
if [ -x /bin/busybox ] && file -L /bin/busybox 2>/dev/null | grep -q static; then
  cp /bin/busybox "$dir"/bin/busybox
  for applet in sh ls cat mount umount echo sleep; do ln -sf busybox "$dir"/bin/$applet; done
  ln -sf ../bin/busybox "$dir"/sbin/init
else
  printf '#!/bin/sh\necho "didymos example %s"\n' "$version" > "$dir"/bin/hello
  chmod 755 "$dir"/bin/hello
fi
# Data: a text file that compresses, one that does not, one that is identical
# across versions, one that changes with the version.
seq 1 50000 > "$dir"/usr/share/example/numbers
head -c 200000 /dev/urandom > "$dir"/usr/share/example/random-"$version"
printf 'same in every version\n%.0s' $(seq 1 100) > "$dir"/usr/share/example/constant
echo "release $version" > "$dir"/usr/share/example/release
