#!/bin/bash
# dracut module: didymos-setup-root mounts the slot the bootloader chose
# (didymos.slot=) from the store partition (didymos.store=) at /sysroot.
# shellcheck disable=SC2154 # moddir, initdir, systemdsystemunitdir: dracut's

check() {
	require_binaries didymos-setup-root || return 1
	# Only when asked for (dracut -a didymos or add_dracutmodules+=" didymos ").
	return 255
}

depends() {
	return 0
}

installkernel() {
	instmods erofs overlay loop ext4
}

install() {
	inst_binary /usr/bin/didymos-setup-root
	inst_simple /etc/didymos/system.conf
	# The keyring the slot's signature is checked against (the path
	# system.conf names; the default is below).
	local keyring
	# The path key of the [keyring] table (other tables have one too).
	keyring=$(awk -F'"' '/^[[:space:]]*\[/ { table = $0 }
		table ~ /^[[:space:]]*\[keyring\]/ && /^[[:space:]]*path[[:space:]]*=/ { print $2; exit }' \
		/etc/didymos/system.conf)
	inst_simple "${keyring:-/etc/didymos/keyring.pem}"
	inst_simple /etc/didymos/keyring.pem 2>/dev/null || :

	if dracut_module_included "systemd"; then
		inst_simple "$moddir/didymos-setup-root.service" \
			"$systemdsystemunitdir/didymos-setup-root.service"
		$SYSTEMCTL -q --root "$initdir" add-requires initrd-root-fs.target \
			didymos-setup-root.service
	else
		# After rootfs-block's parser (95), which would claim root=.
		inst_hook cmdline 96 "$moddir/didymos-parse.sh"
		inst_hook mount 10 "$moddir/didymos-mount.sh"
	fi
}
