# nooelint: oelint.bbclass.underscores
# (Named like oe-core's image classes: recipes say "inherit didymos-image".)
#
# Makes an image recipe a didymos device image:
#
#   - the root filesystem gets the initramfs next to the kernel in /boot, so
#     both are installed per slot as boot files, plus mount points for the
#     boot, store and data partitions (the initramfs binds the store at
#     /store; fstab mounts boot and data);
#   - a tarball of the root filesystem (what bundles are made from);
#   - for wic (WKS_FILE = "didymos-ab.wks.in"): a factory step that signs the
#     image as a bundle and installs it into slot A of a staging device with
#     didymos-native, the same code path a device runs, then lays out the boot
#     partition (bootloader files, A/ with the slot's kernel and initramfs)
#     and the store partition (slot A's image and objects).
#
# Signing uses the bundle class's variables: DIDYMOS_KEY_FILE,
# DIDYMOS_CERT_FILE, DIDYMOS_INTERMEDIATE_FILES. The factory bundle is only an
# intermediate step; the keyring in didymos-conf must trust it.

DIDYMOS_INITRAMFS_IMAGE ??= "didymos-initramfs"
DIDYMOS_INITRAMFS_FSTYPE ??= "cpio.gz"
DIDYMOS_ROOTFS_FSTYPE ??= "tar.zst"
DIDYMOS_STORE_SIZE ??= "2048M"
DIDYMOS_DATA_SIZE ??= "512M"
DIDYMOS_FACTORY_VERSION ??= "${DISTRO_VERSION}"
DIDYMOS_KEY_FILE ??= ""
DIDYMOS_CERT_FILE ??= ""
DIDYMOS_INTERMEDIATE_FILES ??= ""
DIDYMOS_NATIVE_BINARY ??= "${STAGING_BINDIR_NATIVE}/didymos"
DIDYMOS_EFI_BOOT_IMAGE ??= "bootx64.efi"

DIDYMOS_STAGING = "${WORKDIR}/didymos-staging"
DIDYMOS_BOOT_STAGING = "${DIDYMOS_STAGING}/boot"
DIDYMOS_STORE_STAGING = "${DIDYMOS_STAGING}/store"

IMAGE_FSTYPES:append = " ${DIDYMOS_ROOTFS_FSTYPE}"
WKS_FILE ??= "didymos-ab.wks.in"
WICVARS:append = " DIDYMOS_BOOT_STAGING DIDYMOS_STORE_STAGING DIDYMOS_STORE_SIZE DIDYMOS_DATA_SIZE"
# The root is a composefs image: wic must not edit an fstab it cannot reach.
WIC_CREATE_EXTRA_ARGS:append = " --no-fstab-update"

do_rootfs[depends] += "${DIDYMOS_INITRAMFS_IMAGE}:do_image_complete"
ROOTFS_POSTPROCESS_COMMAND += "didymos_rootfs_layout"

didymos_rootfs_layout() {
    install -d ${IMAGE_ROOTFS}/boot ${IMAGE_ROOTFS}/store ${IMAGE_ROOTFS}/data
    install -m 0644 ${DEPLOY_DIR_IMAGE}/${DIDYMOS_INITRAMFS_IMAGE}${IMAGE_MACHINE_SUFFIX}.${DIDYMOS_INITRAMFS_FSTYPE} \
        ${IMAGE_ROOTFS}/boot/initramfs.cpio.gz
    if [ -f ${IMAGE_ROOTFS}/boot/bzImage ] || [ -L ${IMAGE_ROOTFS}/boot/bzImage ]; then
        # kernel-image-bzimage installs a versioned file and a symlink; the
        # slot's boot files are plain files.
        cp -L ${IMAGE_ROOTFS}/boot/bzImage ${IMAGE_ROOTFS}/boot/bzImage.didymos
        rm -f ${IMAGE_ROOTFS}/boot/bzImage
        mv ${IMAGE_ROOTFS}/boot/bzImage.didymos ${IMAGE_ROOTFS}/boot/bzImage
    fi
    cat >> ${IMAGE_ROOTFS}${sysconfdir}/fstab <<EOF
LABEL=boot   /boot   vfat   defaults,nofail   0 0
LABEL=data   /data   ext4   defaults,nofail   0 0
EOF
}

python __anonymous() {
    if 'wic' in (d.getVar('IMAGE_FSTYPES') or '').split():
        d.appendVarFlag('do_didymos_factory', 'depends',
                        ' didymos-native:do_populate_sysroot didymos-boot:do_deploy')
        if d.getVar('DIDYMOS_BOOTLOADER') == 'grub':
            d.appendVarFlag('do_didymos_factory', 'depends', ' grub-efi:do_deploy')
        bb.build.addtask('do_didymos_factory', 'do_image_wic', 'do_image_tar', d)
}

fakeroot do_didymos_factory() {
    if [ -z "${DIDYMOS_KEY_FILE}" ] || [ -z "${DIDYMOS_CERT_FILE}" ]; then
        bbfatal "DIDYMOS_KEY_FILE and DIDYMOS_CERT_FILE must name the key and certificate the factory image is signed with"
    fi
    rm -rf ${DIDYMOS_STAGING}
    install -d ${DIDYMOS_BOOT_STAGING}/A ${DIDYMOS_BOOT_STAGING}/B ${DIDYMOS_STORE_STAGING} \
               ${DIDYMOS_STAGING}/device/data

    intermediates=""
    for f in ${DIDYMOS_INTERMEDIATE_FILES}; do
        intermediates="$intermediates --intermediate $f"
    done
    ${DIDYMOS_NATIVE_BINARY} bundle create \
        --rootfs ${IMGDEPLOYDIR}/${IMAGE_NAME}${IMAGE_NAME_SUFFIX}.${DIDYMOS_ROOTFS_FSTYPE} \
        --output ${DIDYMOS_STAGING}/factory.raucb \
        --cert ${DIDYMOS_CERT_FILE} --key ${DIDYMOS_KEY_FILE} $intermediates \
        --compatible "${DIDYMOS_COMPATIBLE}" --version "${DIDYMOS_FACTORY_VERSION}" \
        --description "factory image" --build "${DATETIME}"

    # A staging device booted from B, so slot A is the one installed.
    echo "didymos.slot=B" > ${DIDYMOS_STAGING}/device/cmdline
    # The keyring the image itself carries (didymos-conf): the factory
    # signature must be one the device accepts.
    cp ${IMAGE_ROOTFS}${sysconfdir}/didymos/keyring.pem ${DIDYMOS_STAGING}/device/keyring.pem
    cat > ${DIDYMOS_STAGING}/device/system.conf <<EOF
[system]
compatible = "${DIDYMOS_COMPATIBLE}"
bootloader = "noop"
data-directory = "data"
kernel-cmdline = "cmdline"

[keyring]
path = "keyring.pem"

[store]
path = "${DIDYMOS_STORE_STAGING}"
verity = "off"

[slot.rootfs.0]
type = "composefs"
bootname = "A"
boot-directory = "${DIDYMOS_BOOT_STAGING}/A"
boot-files = ["boot/bzImage", "boot/initramfs.cpio.gz"]

[slot.rootfs.1]
type = "composefs"
bootname = "B"
boot-directory = "${DIDYMOS_BOOT_STAGING}/B"
boot-files = ["boot/bzImage", "boot/initramfs.cpio.gz"]
EOF
    ${DIDYMOS_NATIVE_BINARY} install --conf ${DIDYMOS_STAGING}/device/system.conf ${DIDYMOS_STAGING}/factory.raucb

    case "${DIDYMOS_BOOTLOADER}" in
    grub)
        install -d ${DIDYMOS_BOOT_STAGING}/EFI/BOOT
        install -m 0644 ${DEPLOY_DIR_IMAGE}/grub-efi-${DIDYMOS_EFI_BOOT_IMAGE} ${DIDYMOS_BOOT_STAGING}/EFI/BOOT/${DIDYMOS_EFI_BOOT_IMAGE}
        install -m 0644 ${DEPLOY_DIR_IMAGE}/didymos-grub.cfg ${DIDYMOS_BOOT_STAGING}/EFI/BOOT/grub.cfg
        install -m 0644 ${DEPLOY_DIR_IMAGE}/didymos-slot-select.cfg ${DIDYMOS_BOOT_STAGING}/EFI/BOOT/didymos.cfg
        install -m 0644 ${DEPLOY_DIR_IMAGE}/didymos-grubenv ${DIDYMOS_BOOT_STAGING}/EFI/BOOT/grubenv
        ;;
    uboot)
        install -m 0644 ${DEPLOY_DIR_IMAGE}/boot.scr ${DIDYMOS_BOOT_STAGING}/boot.scr
        ;;
    esac
}
do_didymos_factory[doc] = "Installs the image into slot A of a staging device and lays out the boot and store partitions"
do_didymos_factory[vardepsexclude] = "DATETIME"
