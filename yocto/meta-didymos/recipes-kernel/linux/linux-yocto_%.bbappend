# Kernel options the didymos boot path needs (with the didymos-ab distro feature).
FILESEXTRAPATHS:prepend:didymos-ab := "${THISDIR}/files:"
SRC_URI:append:didymos-ab = " file://didymos.cfg"
