SUMMARY = "didymos device configuration: system.conf and the bundle keyring"
DESCRIPTION = "Installs /etc/didymos/system.conf and /etc/didymos/keyring.pem. \
The files shipped here describe the example A/B layout and trust the \
development certificate authority; a product replaces both from a bbappend."
HOMEPAGE = "${DIDYMOS_HOMEPAGE}"
SECTION = "admin"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

SRC_URI = "\
    file://system.conf \
    file://keyring.pem \
"

# Where do_unpack puts the sources: UNPACKDIR where the release has one,
# WORKDIR in releases that predate it.
DIDYMOS_UNPACKDIR = "${@d.getVar('UNPACKDIR') or d.getVar('WORKDIR')}"
S = "${DIDYMOS_UNPACKDIR}"

# system.conf carries the machine's compatible string.
PACKAGE_ARCH = "${MACHINE_ARCH}"

do_configure[noexec] = "1"
do_compile[noexec] = "1"

do_install() {
    install -d ${D}${sysconfdir}/didymos
    sed -e 's|@DIDYMOS_COMPATIBLE@|${DIDYMOS_COMPATIBLE}|g' \
        -e 's|@DIDYMOS_BOOTLOADER@|${DIDYMOS_BOOTLOADER}|g' \
        -e 's|@DIDYMOS_BOOT_ATTEMPTS@|${DIDYMOS_BOOT_ATTEMPTS}|g' \
        ${S}/system.conf > ${D}${sysconfdir}/didymos/system.conf
    chmod 0644 ${D}${sysconfdir}/didymos/system.conf
    install -m 0644 ${S}/keyring.pem ${D}${sysconfdir}/didymos/keyring.pem

    if ! grep -q '^bootloader = "${DIDYMOS_BOOTLOADER}"' ${D}${sysconfdir}/didymos/system.conf; then
        bbwarn "system.conf does not say bootloader = \"${DIDYMOS_BOOTLOADER}\" (DIDYMOS_BOOTLOADER);" \
               "the bootloader tools pulled in by didymos will not match the backend"
    fi
}

# Runs on every build (not only when do_install reruns), so the warning cannot
# scroll away into the shared-state cache.
python do_didymos_keyring_check() {
    import os
    keyring = bb.utils.which(d.getVar('FILESPATH'), 'keyring.pem')
    layer = os.path.realpath(d.getVar('DIDYMOS_LAYERDIR'))
    if keyring and os.path.realpath(os.path.dirname(keyring)).startswith(
            os.path.realpath(os.path.join(layer, 'recipes-didymos', 'didymos-conf'))):
        bb.warn("didymos-conf ships the DEVELOPMENT keyring from meta-didymos (%s). "
                "Every device built from this image accepts bundles signed with the "
                "publicly known development key. Provide your own keyring.pem from a "
                "didymos-conf.bbappend (FILESEXTRAPATHS:prepend := \"${THISDIR}/files:\") "
                "before shipping." % keyring)
}
do_didymos_keyring_check[nostamp] = "1"
addtask didymos_keyring_check after do_install before do_build

CONFFILES:${PN} = "${sysconfdir}/didymos/system.conf"
FILES:${PN} = "${sysconfdir}/didymos"
