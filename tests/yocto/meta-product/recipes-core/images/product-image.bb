SUMMARY = "A product's device image, with the signed bundle of it"
DESCRIPTION = "The image docs/yocto.md shows: a device image that also signs \
a bundle of itself for updates."
LICENSE = "MIT"

IMAGE_INSTALL = "packagegroup-core-boot didymos didymos-service didymos-mark-good kernel-image-bzimage"

inherit core-image didymos-image didymos-bundle

DIDYMOS_BUNDLE_VERSION = "2.4.1"
DIDYMOS_KEY_FILE = "${DIDYMOS_LAYERDIR}/files/dev-pki/signing.key"
DIDYMOS_CERT_FILE = "${DIDYMOS_LAYERDIR}/files/dev-pki/signing.pem"
DIDYMOS_INTERMEDIATE_FILES = "${DIDYMOS_LAYERDIR}/files/dev-pki/intermediate-ca.pem"
