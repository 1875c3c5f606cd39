require didymos.inc

# By default the recipe builds the didymos repository this layer lives in
# (yocto/meta-didymos inside it), at the head of DIDYMOS_GIT_BRANCH. A product
# build points DIDYMOS_GIT_URI at its own mirror and pins SRCREV; the crate
# list in didymos-crates.inc must match that revision's Cargo.lock.
DIDYMOS_GIT_URI ??= "git://${DIDYMOS_SRCTREE};protocol=file"
DIDYMOS_GIT_BRANCH ??= "main"

SRC_URI = "${DIDYMOS_GIT_URI};branch=${DIDYMOS_GIT_BRANCH};destsuffix=didymos"
PV = "0.1.0+git"
SRCREV ??= "${AUTOREV}"
