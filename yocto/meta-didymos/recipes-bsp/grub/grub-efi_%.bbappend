# Modules the didymos slot selection (boot/grub/didymos.cfg) uses, built into
# the EFI image because the boot partition carries no module directory.
GRUB_BUILDIN:append:didymos-ab = " configfile echo eval loadenv test"
