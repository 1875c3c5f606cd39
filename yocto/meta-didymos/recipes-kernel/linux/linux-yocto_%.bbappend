# Kernel options the didymos boot path needs (with the didymos distro feature).
FILESEXTRAPATHS:prepend:didymos := "${THISDIR}/files:"
SRC_URI:append:didymos = " file://didymos.cfg"
