require didymos.inc

# A release of didymos: the project's repository at a pinned revision, with
# the crates of that revision's Cargo.lock (didymos-crates.inc). Move both
# together with scripts/update-crates --rev <commit>, never by hand.
#
# A product builds from its own mirror with DIDYMOS_GIT_URI (and
# DIDYMOS_GIT_BRANCH for the branch holding SRCREV), or from a local checkout
# with EXTERNALSRC (docs/yocto.md, "Building from a local checkout").
DIDYMOS_GIT_URI ??= "git://github.com/didymos-ota/didymos.git;protocol=https"
DIDYMOS_GIT_BRANCH ??= "main"

PV = "0.1.0+git"
SRC_URI = "${DIDYMOS_GIT_URI};branch=${DIDYMOS_GIT_BRANCH};destsuffix=didymos"
SRCREV = "0b85b28c87c1d78ed57455089afaf52ac2ad0a45"
# After SRC_URI, which it adds to.
require didymos-crates.inc
