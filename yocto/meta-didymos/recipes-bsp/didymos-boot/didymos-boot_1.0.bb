SUMMARY = "didymos boot files: the GRUB A/B fragment or the U-Boot boot script"
DESCRIPTION = "Deploys the slot-selection script shipped with didymos for the \
bootloader in DIDYMOS_BOOTLOADER, and for GRUB an initial environment block \
in which slot A is good and B is empty, so wic can put both on the boot \
partition."
HOMEPAGE = "${DIDYMOS_HOMEPAGE}"
SECTION = "bootloaders"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

# The slot-selection scripts live in the didymos source tree, next to the
# code that writes the variables they read; grub.cfg (the board part that
# sources the GRUB one) is this layer's.
FILESEXTRAPATHS:prepend := "${DIDYMOS_SRCTREE}/boot/grub:${DIDYMOS_SRCTREE}/boot/u-boot:"

SRC_URI = "${@bb.utils.contains('DIDYMOS_BOOTLOADER', 'grub', 'file://grub.cfg file://didymos.cfg', '', d)} \
           ${@bb.utils.contains('DIDYMOS_BOOTLOADER', 'uboot', 'file://boot.cmd', '', d)}"

# Extra kernel arguments (didymos.slot= is added by the slot selection). The
# initramfs finds the store partition by its label (wic/didymos-ab.wks.in).
DIDYMOS_KERNEL_CMDLINE ??= "didymos.store=LABEL=store rootwait console=ttyS0,115200"

# Where do_unpack puts the sources: UNPACKDIR where the release has one,
# WORKDIR in releases that predate it.
DIDYMOS_UNPACKDIR = "${@d.getVar('UNPACKDIR') or d.getVar('WORKDIR')}"
S = "${DIDYMOS_UNPACKDIR}"

DEPENDS = "\
    ${@bb.utils.contains('DIDYMOS_BOOTLOADER', 'grub', 'grub-native', '', d)} \
    ${@bb.utils.contains('DIDYMOS_BOOTLOADER', 'uboot', 'u-boot-tools-native', '', d)} \
"

PACKAGE_ARCH = "${MACHINE_ARCH}"

inherit deploy nopackages

do_configure[noexec] = "1"
do_install[noexec] = "1"

do_compile() {
    case "${DIDYMOS_BOOTLOADER}" in
    grub)
        sed -e 's|@DIDYMOS_BOOT_ATTEMPTS@|${DIDYMOS_BOOT_ATTEMPTS}|' \
            -e 's|@DIDYMOS_KERNEL_CMDLINE@|${DIDYMOS_KERNEL_CMDLINE}|' \
            ${S}/grub.cfg > ${B}/grub.cfg
        # The "attempts" scheme: slot A good with a full budget, B empty.
        rm -f ${B}/grubenv
        grub-editenv ${B}/grubenv create
        grub-editenv ${B}/grubenv set ORDER="A B" A_OK=1 A_LEFT=${DIDYMOS_BOOT_ATTEMPTS} B_OK=0 B_LEFT=0
        ;;
    uboot)
        mkimage -A ${UBOOT_ARCH} -O linux -T script -C none -n "didymos A/B" \
            -d ${S}/boot.cmd ${B}/boot.scr
        ;;
    *)
        bbnote "DIDYMOS_BOOTLOADER=${DIDYMOS_BOOTLOADER}: no boot script to build"
        ;;
    esac
}

do_deploy() {
    install -d ${DEPLOYDIR}
    case "${DIDYMOS_BOOTLOADER}" in
    grub)
        install -m 0644 ${B}/grub.cfg ${DEPLOYDIR}/didymos-grub.cfg
        install -m 0644 ${S}/didymos.cfg ${DEPLOYDIR}/didymos-slot-select.cfg
        install -m 0644 ${B}/grubenv ${DEPLOYDIR}/didymos-grubenv
        ;;
    uboot)
        install -m 0644 ${B}/boot.scr ${DEPLOYDIR}/boot.scr
        ;;
    esac
}
addtask deploy after do_compile before do_build
