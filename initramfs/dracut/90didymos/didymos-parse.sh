#!/bin/sh
# dracut cmdline hook (initrds without systemd): with didymos.slot= (or
# rauc.slot=) the root is the slot that the mount hook mounts, and root=
# names the store partition. Claim the root (dracut's /init refuses to go
# on when no module does, and rootfs-block would mount the store as the
# root) and wait for the store device.
# shellcheck disable=SC2034 # root and rootok are read by dracut's /init
type getarg >/dev/null 2>&1 || . /lib/dracut-lib.sh

if [ -n "$(getarg didymos.slot=)$(getarg rauc.slot=)" ]; then
	store=$(getarg didymos.store=)
	[ -n "$store" ] || store=$(getarg root=)
	case "$store" in
	LABEL=* | UUID=* | PARTUUID=* | PARTLABEL=*) wait_for_dev "$(label_uuid_to_dev "$store")" ;;
	/dev/*) wait_for_dev "$store" ;;
	esac
	root=didymos
	rootok=1
fi
