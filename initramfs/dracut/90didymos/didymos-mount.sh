#!/bin/sh
# dracut mount hook (initrds without systemd): mount the slot at $NEWROOT.
type getarg >/dev/null 2>&1 || . /lib/dracut-lib.sh

if [ -n "$(getarg didymos.slot=)$(getarg rauc.slot=)" ] && ! ismounted "$NEWROOT"; then
	didymos-setup-root --no-switch-root --target "$NEWROOT" ||
		die "didymos-setup-root refused the slot; see the line above"
fi
