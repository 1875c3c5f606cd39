SUMMARY = "initramfs that boots the didymos slot the bootloader chose"
DESCRIPTION = "initramfs-framework with udev and the didymos module, \
didymos-setup-root and the device configuration and keyring it checks \
the slot's image against."
HOMEPAGE = "${DIDYMOS_HOMEPAGE}"
LICENSE = "MIT"

PACKAGE_INSTALL = "\
    initramfs-framework-base \
    initramfs-module-udev \
    initramfs-module-didymos \
    didymos-conf \
    ${VIRTUAL-RUNTIME_base-utils} \
    base-passwd \
    ${ROOTFS_BOOTSTRAP_INSTALL} \
"

# Nothing but the packages above.
IMAGE_FEATURES = ""
IMAGE_LINGUAS = ""
NO_RECOMMENDATIONS = "1"

IMAGE_NAME_SUFFIX ?= ""
IMAGE_FSTYPES = "${INITRAMFS_FSTYPES}"

inherit core-image

IMAGE_ROOTFS_SIZE = "8192"
IMAGE_ROOTFS_EXTRA_SPACE = "0"
