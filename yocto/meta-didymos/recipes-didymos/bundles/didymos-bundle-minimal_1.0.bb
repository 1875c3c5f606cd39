SUMMARY = "Signed didymos bundle of didymos-image-minimal"
DESCRIPTION = "An update for the example device. Signed with the development \
key unless DIDYMOS_KEY_FILE and DIDYMOS_CERT_FILE name release credentials."
HOMEPAGE = "${DIDYMOS_HOMEPAGE}"
LICENSE = "MIT"

# Nothing to fetch: the bundle is made from the image in DEPLOY_DIR_IMAGE.
SRC_URI = ""

inherit didymos-bundle

require didymos-dev-pki.inc

DIDYMOS_BUNDLE_IMAGE = "didymos-image-minimal"
DIDYMOS_BUNDLE_VERSION = "${DISTRO_VERSION}"
