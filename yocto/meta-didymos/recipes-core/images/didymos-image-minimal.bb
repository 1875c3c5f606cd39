SUMMARY = "A minimal didymos device: core-image-minimal on a composefs A/B root"
DESCRIPTION = "A small image with the didymos client, daemon and mark-good \
service and its kernel in /boot (installed per slot as boot files), built \
as a root filesystem tarball for bundles."
HOMEPAGE = "${DIDYMOS_HOMEPAGE}"
LICENSE = "MIT"

IMAGE_INSTALL = "\
    packagegroup-core-boot \
    didymos \
    didymos-mark-good \
    didymos-service \
    kernel-image-bzimage \
    ${CORE_IMAGE_EXTRA_INSTALL} \
"
IMAGE_LINGUAS = ""

# The A/B disk (wic/didymos-ab.wks.in, set by didymos-image).
IMAGE_FSTYPES:append = " wic"

inherit core-image didymos-image

# The factory bundle for slot A is signed with the development credentials.
require recipes-didymos/bundles/didymos-dev-pki.inc
