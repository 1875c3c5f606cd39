SUMMARY = "initramfs-framework module that mounts the booted didymos slot as root"
DESCRIPTION = "Runs didymos-setup-root before the rootfs module: it verifies the \
slot the bootloader chose and mounts its composefs image as the root filesystem."
HOMEPAGE = "${DIDYMOS_HOMEPAGE}"
SECTION = "admin"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

SRC_URI = "file://didymos"

# Where do_unpack puts the sources: UNPACKDIR where the release has one,
# WORKDIR in releases that predate it.
DIDYMOS_UNPACKDIR = "${@d.getVar('UNPACKDIR') or d.getVar('WORKDIR')}"
S = "${DIDYMOS_UNPACKDIR}"

inherit allarch

do_configure[noexec] = "1"
do_compile[noexec] = "1"

# 85: after udev (01), before rootfs (90) and finish (99).
do_install() {
    install -d ${D}/init.d
    install -m 0755 ${S}/didymos ${D}/init.d/85-didymos
}

FILES:${PN} = "/init.d/85-didymos"
RDEPENDS:${PN} = "didymos-setup-root initramfs-framework-base"
