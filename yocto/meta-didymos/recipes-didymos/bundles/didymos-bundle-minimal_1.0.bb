SUMMARY = "Signed didymos bundle of didymos-image-minimal"
DESCRIPTION = "An update for the example device. Signed with the development \
key unless DIDYMOS_KEY_FILE and DIDYMOS_CERT_FILE name release credentials."
LICENSE = "MIT"

# Nothing to fetch: the bundle is made from the image in DEPLOY_DIR_IMAGE.
SRC_URI = ""

inherit didymos-bundle

DIDYMOS_BUNDLE_IMAGE = "didymos-image-minimal"
DIDYMOS_BUNDLE_VERSION = "${DISTRO_VERSION}"

# The development credentials from the didymos source tree. Never ship them.
DIDYMOS_DEV_PKI ??= "${DIDYMOS_SRCTREE}/bundles/pki"
DIDYMOS_KEY_FILE ??= "${DIDYMOS_DEV_PKI}/signing.key.pem"
DIDYMOS_CERT_FILE ??= "${DIDYMOS_DEV_PKI}/signing.cert.pem"

python do_didymos_bundle:prepend() {
    if d.getVar('DIDYMOS_KEY_FILE').startswith(d.getVar('DIDYMOS_DEV_PKI')):
        bb.warn("%s is signed with the DEVELOPMENT key (%s); set DIDYMOS_KEY_FILE and "
                "DIDYMOS_CERT_FILE to release credentials" % (d.getVar('PN'), d.getVar('DIDYMOS_KEY_FILE')))
}
