# nooelint: oelint.bbclass.underscores
# (The name follows oe-core's own classes, e.g. image-artifact-names and
# cargo-update-recipe-crates, and meta-rauc: recipes say "inherit didymos-bundle".)
#
# Builds a signed didymos bundle (.raucb) from an image's root filesystem.
#
# Two ways to use it:
#
#   - a bundle recipe of its own names the image (its bundle task runs after
#     the image's do_image_complete, and do_deploy puts the bundle into
#     DEPLOY_DIR_IMAGE):
#
#       inherit didymos-bundle
#       DIDYMOS_BUNDLE_IMAGE = "core-image-minimal"    # provides the rootfs tarball
#
#   - an image recipe inherits it after the image class, and the image's own
#     root filesystem becomes the bundle (its bundle task runs after the
#     tarball is made and before do_image_complete, so the bundle is deployed
#     with the image and comes from the shared-state cache with it):
#
#       inherit core-image didymos-bundle
#
# Either way the signing material must be named; everything else has a
# default:
#
#   DIDYMOS_BUNDLE_COMPATIBLE = "acme-gateway-v3"      # default: DIDYMOS_COMPATIBLE
#   DIDYMOS_BUNDLE_VERSION = "2.4.1"                   # default: PV
#   DIDYMOS_BUNDLE_DESCRIPTION = "Spring release"      # default: SUMMARY
#   DIDYMOS_BUNDLE_BUILD = "${DATETIME}"               # default
#   DIDYMOS_BUNDLE_BASE = "/srv/releases/gateway-2.4.0.raucb"   # delta against these
#   DIDYMOS_BUNDLE_RAW = "bootloader=u-boot.img"       # raw images for raw slots: class=file
#
#   DIDYMOS_KEY_FILE = "/secure/release.key.pem"       # or a pkcs11: URI
#   DIDYMOS_CERT_FILE = "/secure/release.cert.pem"
#   DIDYMOS_INTERMEDIATE_FILES = "/secure/intermediate.cert.pem"
#
# The image must produce a tarball of its root filesystem:
#   IMAGE_FSTYPES:append:pn-core-image-minimal = " tar.zst"
#
# Or the bundle is made from a container image instead (docs/oci.md):
#
#   DIDYMOS_BUNDLE_OCI = "oci-archive:/srv/images/gateway-2.4.1.tar"
#   DIDYMOS_BUNDLE_OCI_XATTRS = "capabilities"        # or "capabilities+user"
#
# oci:, oci-archive: and docker-archive: are read by didymos itself;
# containers-storage: runs skopeo, which bitbake finds only when it is in
# HOSTTOOLS (HOSTTOOLS_NONFATAL += "skopeo"). With DIDYMOS_BUNDLE_OCI set,
# DIDYMOS_BUNDLE_IMAGE is not used, and an empty DIDYMOS_BUNDLE_VERSION takes
# the image's org.opencontainers.image.version label.
#
# An encrypted key's passphrase is read from the environment bitbake was
# started in (DIDYMOS_KEY_PASSPHRASE) or from DIDYMOS_KEY_PASSPHRASE_FILE. It
# is handed to didymos in its environment only; it never appears in a task
# script or log.
#
# didymos-native runs under pseudo, so ownership and extended attributes come
# from the tarball exactly as the image recorded them, without root. The bundle
# lands in DEPLOY_DIR_IMAGE as ${DIDYMOS_BUNDLE_NAME}.raucb with a
# ${DIDYMOS_BUNDLE_LINK_NAME}.raucb symlink (in an image recipe: the image's
# IMAGE_NAME and IMAGE_LINK_NAME).

LICENSE ?= "MIT"

# "image" when inherited by an image recipe (after the image class), "recipe"
# in a bundle recipe of its own. Decided here, at inherit time, because the
# two differ in what they inherit.
DIDYMOS_BUNDLE_MODE := "${@'image' if bb.data.inherits_class('image', d) else 'recipe'}"

DEPENDS += "didymos-native"

inherit ${@'' if d.getVar('DIDYMOS_BUNDLE_MODE') == 'image' else 'nopackages deploy image-artifact-names'}

# What image.bbclass sets for an image anyway.
PACKAGE_ARCH = "${MACHINE_ARCH}"
PACKAGES = ""
INHIBIT_DEFAULT_DEPS = "1"

DIDYMOS_BUNDLE_IMAGE ??= ""
DIDYMOS_BUNDLE_IMAGE[doc] = "The image recipe whose root filesystem tarball goes into the bundle."
DIDYMOS_BUNDLE_IMAGE_FSTYPE ??= "tar.zst"
DIDYMOS_BUNDLE_IMAGE_FSTYPE[doc] = "Which of the image's IMAGE_FSTYPES is the rootfs tarball (tar, tar.gz, tar.zst)."
DIDYMOS_BUNDLE_ROOTFS ??= "${@d.getVar('IMGDEPLOYDIR') + '/' + d.getVar('IMAGE_NAME') if d.getVar('DIDYMOS_BUNDLE_MODE') == 'image' else d.getVar('DEPLOY_DIR_IMAGE') + '/' + d.getVar('DIDYMOS_BUNDLE_IMAGE') + d.getVar('IMAGE_MACHINE_SUFFIX')}${IMAGE_NAME_SUFFIX}.${DIDYMOS_BUNDLE_IMAGE_FSTYPE}"
DIDYMOS_BUNDLE_ROOTFS[doc] = "The rootfs tarball (or directory) the bundle is made from; derived from DIDYMOS_BUNDLE_IMAGE, or in an image recipe the image's own tarball."

DIDYMOS_BUNDLE_OCI ??= ""
DIDYMOS_BUNDLE_OCI[doc] = "A container image to make the bundle from instead of DIDYMOS_BUNDLE_IMAGE: oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE or containers-storage:IMAGE."
DIDYMOS_BUNDLE_OCI_XATTRS ??= "capabilities"
DIDYMOS_BUNDLE_OCI_XATTRS[doc] = "Extended attributes a container image's files keep: capabilities (composefs-rs's default) or capabilities+user."

DIDYMOS_BUNDLE_COMPATIBLE ??= "${DIDYMOS_COMPATIBLE}"
DIDYMOS_BUNDLE_COMPATIBLE[doc] = "Must equal [system] compatible in the device's system.conf."
DIDYMOS_BUNDLE_VERSION ??= "${PV}"
DIDYMOS_BUNDLE_VERSION[doc] = "The bundle's version (compared against min-bundle-version on the device)."
DIDYMOS_BUNDLE_DESCRIPTION ??= "${SUMMARY}"
DIDYMOS_BUNDLE_DESCRIPTION[doc] = "Free text shown by didymos info."
DIDYMOS_BUNDLE_BUILD ??= "${DATETIME}"
DIDYMOS_BUNDLE_BUILD[vardepsexclude] = "DATETIME"
DIDYMOS_BUNDLE_BUILD[doc] = "Build identifier recorded in the manifest."
DIDYMOS_BUNDLE_BASE ??= ""
DIDYMOS_BUNDLE_BASE[doc] = "Earlier bundles this one is a delta against (absolute paths, or names in DEPLOY_DIR_IMAGE)."
DIDYMOS_BUNDLE_RAW ??= ""
DIDYMOS_BUNDLE_RAW[doc] = "Raw images for the device's raw slots, as class=file (absolute paths, or names in DEPLOY_DIR_IMAGE); the recipe must depend on what deploys them."

DIDYMOS_KEY_FILE ??= ""
DIDYMOS_KEY_FILE[doc] = "The signing key (PEM file or pkcs11: URI)."
DIDYMOS_CERT_FILE ??= ""
DIDYMOS_CERT_FILE[doc] = "The signing certificate (PEM)."
DIDYMOS_INTERMEDIATE_FILES ??= ""
DIDYMOS_INTERMEDIATE_FILES[doc] = "Intermediate certificates embedded in the signature (PEM files)."
DIDYMOS_KEY_PASSPHRASE_FILE ??= ""
DIDYMOS_KEY_PASSPHRASE_FILE[doc] = "A file holding the signing key's passphrase (alternative to the environment)."
DIDYMOS_BUNDLE_ARGS ??= ""
DIDYMOS_BUNDLE_ARGS[doc] = "Extra arguments for didymos bundle create, split on white space."

DIDYMOS_BUNDLE_BASENAME ??= "${PN}"
DIDYMOS_BUNDLE_NAME ??= "${@'${IMAGE_NAME}' if d.getVar('DIDYMOS_BUNDLE_MODE') == 'image' else '${DIDYMOS_BUNDLE_BASENAME}-${MACHINE}-${DATETIME}'}"
DIDYMOS_BUNDLE_NAME[vardepsexclude] = "DATETIME"
DIDYMOS_BUNDLE_LINK_NAME ??= "${@'${IMAGE_LINK_NAME}' if d.getVar('DIDYMOS_BUNDLE_MODE') == 'image' else '${DIDYMOS_BUNDLE_BASENAME}-${MACHINE}'}"
DIDYMOS_BUNDLE_DIR = "${WORKDIR}/didymos-bundle"
DIDYMOS_BUNDLE_OUTPUT ??= "${DIDYMOS_BUNDLE_DIR}/bundle.raucb"

DIDYMOS_NATIVE_BINARY ??= "${STAGING_BINDIR_NATIVE}/didymos"

# An image has its tarball made in IMAGE_FSTYPES.
IMAGE_FSTYPES:append = " ${@'${DIDYMOS_BUNDLE_IMAGE_FSTYPE}' if d.getVar('DIDYMOS_BUNDLE_MODE') == 'image' else ''}"

do_fetch[noexec] = "1"
do_unpack[noexec] = "1"
do_patch[noexec] = "1"
do_configure[noexec] = "1"
do_compile[noexec] = "1"
do_install[noexec] = "1"
deltask do_populate_sysroot

python __anonymous() {
    pn = d.getVar('PN')
    if d.getVar('DIDYMOS_BUNDLE_MODE') == 'image':
        # The bundle is made from the image's own tarball, before
        # do_image_complete deploys the image's files, the bundle with them.
        fstype = d.getVar('DIDYMOS_BUNDLE_IMAGE_FSTYPE')
        if fstype not in (d.getVar('IMAGE_FSTYPES') or '').split():
            bb.fatal("%s: DIDYMOS_BUNDLE_IMAGE_FSTYPE %s is not in IMAGE_FSTYPES" % (pn, fstype))
        bb.build.addtask('do_didymos_bundle', 'do_image_complete', 'do_image_%s' % fstype.split('.')[0], d)
        return
    if bb.data.inherits_class('image', d):
        bb.fatal("%s inherits didymos-bundle before the image class; inherit it after: "
                 "inherit core-image didymos-bundle" % pn)
    image = d.getVar('DIDYMOS_BUNDLE_IMAGE')
    if d.getVar('DIDYMOS_BUNDLE_OCI'):
        # The container image is the input; no image recipe is built for it.
        pass
    elif image:
        d.appendVarFlag('do_didymos_bundle', 'depends', ' %s:do_image_complete' % image)
    elif not d.getVar('DIDYMOS_BUNDLE_ROOTFS'):
        bb.fatal("%s inherits didymos-bundle but sets neither DIDYMOS_BUNDLE_IMAGE "
                 "(the image recipe providing the root filesystem) nor DIDYMOS_BUNDLE_ROOTFS" % pn)
    bb.build.addtask('do_didymos_bundle', 'do_deploy', 'do_configure', d)
    bb.build.addtask('do_deploy', 'do_build', 'do_didymos_bundle', d)
}

def didymos_bundle_path(name, d):
    """A base bundle: absolute, or a file name in DEPLOY_DIR_IMAGE."""
    import os
    if os.path.isabs(name):
        return name
    return os.path.join(d.getVar('DEPLOY_DIR_IMAGE'), name)

def didymos_bundle_argv(d):
    """The didymos bundle create command line, derived from the class's variables."""
    oci = d.getVar('DIDYMOS_BUNDLE_OCI')
    if oci:
        source = ['--oci', oci, '--oci-xattrs', d.getVar('DIDYMOS_BUNDLE_OCI_XATTRS')]
    else:
        source = ['--rootfs', d.getVar('DIDYMOS_BUNDLE_ROOTFS')]
    argv = [d.getVar('DIDYMOS_NATIVE_BINARY'), 'bundle', 'create'] + source + [
        '--output', d.getVar('DIDYMOS_BUNDLE_OUTPUT'),
        '--cert', d.getVar('DIDYMOS_CERT_FILE'),
        '--key', d.getVar('DIDYMOS_KEY_FILE'),
    ]
    for intermediate in (d.getVar('DIDYMOS_INTERMEDIATE_FILES') or '').split():
        argv += ['--intermediate', intermediate]
    argv += ['--compatible', d.getVar('DIDYMOS_BUNDLE_COMPATIBLE')]
    if d.getVar('DIDYMOS_BUNDLE_VERSION') or not oci:
        argv += ['--version', d.getVar('DIDYMOS_BUNDLE_VERSION')]
    description = d.getVar('DIDYMOS_BUNDLE_DESCRIPTION')
    if description:
        argv += ['--description', description]
    build = d.getVar('DIDYMOS_BUNDLE_BUILD')
    if build:
        argv += ['--build', build]
    for base in (d.getVar('DIDYMOS_BUNDLE_BASE') or '').split():
        argv += ['--base', didymos_bundle_path(base, d)]
    for raw in (d.getVar('DIDYMOS_BUNDLE_RAW') or '').split():
        cls, _, name = raw.partition('=')
        argv += ['--raw', '%s=%s' % (cls, didymos_bundle_path(name, d))]
    argv += (d.getVar('DIDYMOS_BUNDLE_ARGS') or '').split()
    return argv

def didymos_bundle_check(d):
    """Fails with a message naming the variable to set when an input is missing."""
    import os
    oci = d.getVar('DIDYMOS_BUNDLE_OCI')
    for var, what in (('DIDYMOS_KEY_FILE', 'the signing key'),
                      ('DIDYMOS_CERT_FILE', 'the signing certificate'),
                      ('DIDYMOS_BUNDLE_COMPATIBLE', 'the compatible string'),
                      ('DIDYMOS_BUNDLE_VERSION', 'the bundle version')):
        if var == 'DIDYMOS_BUNDLE_VERSION' and oci:
            continue  # the image's version label may give it
        if not d.getVar(var):
            bb.fatal("%s is not set: set it to %s" % (var, what))
    files = [('DIDYMOS_CERT_FILE', d.getVar('DIDYMOS_CERT_FILE'))]
    if not d.getVar('DIDYMOS_KEY_FILE').startswith('pkcs11:'):
        files.append(('DIDYMOS_KEY_FILE', d.getVar('DIDYMOS_KEY_FILE')))
    files += [('DIDYMOS_INTERMEDIATE_FILES', f) for f in (d.getVar('DIDYMOS_INTERMEDIATE_FILES') or '').split()]
    files += [('DIDYMOS_BUNDLE_BASE', didymos_bundle_path(b, d)) for b in (d.getVar('DIDYMOS_BUNDLE_BASE') or '').split()]
    for raw in (d.getVar('DIDYMOS_BUNDLE_RAW') or '').split():
        cls, _, name = raw.partition('=')
        if not cls or not name:
            bb.fatal("DIDYMOS_BUNDLE_RAW: %r is not class=file (e.g. bootloader=u-boot.img)" % raw)
        files.append(('DIDYMOS_BUNDLE_RAW', didymos_bundle_path(name, d)))
    for var, path in files:
        if not os.path.isfile(path):
            bb.fatal("%s: %s does not exist" % (var, path))
    if oci:
        transport, _, rest = oci.partition(':')
        if transport not in ('oci', 'oci-archive', 'docker-archive', 'containers-storage') or not rest:
            bb.fatal("DIDYMOS_BUNDLE_OCI: %r is not oci:DIR, oci-archive:FILE, docker-archive:FILE "
                     "or containers-storage:IMAGE" % oci)
        if transport != 'containers-storage' and not os.path.exists(rest.split(':')[0]):
            bb.fatal("DIDYMOS_BUNDLE_OCI: %s does not exist" % rest.split(':')[0])
        return
    rootfs = d.getVar('DIDYMOS_BUNDLE_ROOTFS')
    if not os.path.exists(rootfs):
        bb.fatal("the root filesystem %s does not exist; add %s to IMAGE_FSTYPES of %s "
                 "(or set DIDYMOS_BUNDLE_IMAGE_FSTYPE to one it builds)"
                 % (rootfs, d.getVar('DIDYMOS_BUNDLE_IMAGE_FSTYPE'), d.getVar('DIDYMOS_BUNDLE_IMAGE')))

def didymos_key_passphrase(d):
    """The key passphrase from DIDYMOS_KEY_PASSPHRASE_FILE or bitbake's original environment."""
    path = d.getVar('DIDYMOS_KEY_PASSPHRASE_FILE')
    if path:
        with open(path) as f:
            return f.read().rstrip('\n')
    origenv = d.getVar('BB_ORIGENV', False)
    if origenv:
        return origenv.getVar('DIDYMOS_KEY_PASSPHRASE')
    return None

fakeroot python do_didymos_bundle() {
    import os
    import shlex
    import subprocess

    didymos_bundle_check(d)
    dev_pki = os.path.join(d.getVar('DIDYMOS_LAYERDIR'), 'files', 'dev-pki')
    if os.path.realpath(d.getVar('DIDYMOS_KEY_FILE')).startswith(os.path.realpath(dev_pki) + os.sep):
        bb.warn("%s is signed with the public DEVELOPMENT key (%s); set DIDYMOS_KEY_FILE, "
                "DIDYMOS_CERT_FILE and DIDYMOS_INTERMEDIATE_FILES to release credentials"
                % (d.getVar('PN'), d.getVar('DIDYMOS_KEY_FILE')))
    argv = didymos_bundle_argv(d)
    env = dict(os.environ)
    passphrase = didymos_key_passphrase(d)
    if passphrase is not None:
        env['DIDYMOS_KEY_PASSPHRASE'] = passphrase
    bb.note("Running %s" % ' '.join(shlex.quote(a) for a in argv))
    result = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    bb.note(result.stdout)
    if result.returncode != 0:
        bb.fatal("didymos bundle create failed (exit status %d):\n%s" % (result.returncode, result.stdout))
}
do_didymos_bundle[doc] = "Creates the signed bundle from the image's root filesystem with didymos-native"
do_didymos_bundle[dirs] = "${DIDYMOS_BUNDLE_DIR}"
do_didymos_bundle[cleandirs] = "${DIDYMOS_BUNDLE_DIR}"
do_didymos_bundle[depends] += "virtual/fakeroot-native:do_populate_sysroot didymos-native:do_populate_sysroot"
do_didymos_bundle[vardeps] += "DIDYMOS_BUNDLE_ROOTFS DIDYMOS_BUNDLE_OUTPUT DIDYMOS_CERT_FILE DIDYMOS_KEY_FILE \
    DIDYMOS_INTERMEDIATE_FILES DIDYMOS_BUNDLE_COMPATIBLE DIDYMOS_BUNDLE_VERSION DIDYMOS_BUNDLE_DESCRIPTION \
    DIDYMOS_BUNDLE_BUILD DIDYMOS_BUNDLE_BASE DIDYMOS_BUNDLE_RAW DIDYMOS_BUNDLE_OCI DIDYMOS_BUNDLE_OCI_XATTRS DIDYMOS_BUNDLE_ARGS DIDYMOS_NATIVE_BINARY DIDYMOS_KEY_PASSPHRASE_FILE"
# The certificates are part of the task's signature. Each entry is
# "path:exists" with the truth at parse time: saying False for a file that
# exists makes bitbake reparse the recipe on every command.
do_didymos_bundle[file-checksums] += "${@' '.join('%s:%s' % (f, os.path.exists(f)) for f in (d.getVar('DIDYMOS_CERT_FILE') + ' ' + d.getVar('DIDYMOS_INTERMEDIATE_FILES')).split())}"
# In an image recipe the bundle goes with the image's own files.
do_didymos_bundle[postfuncs] += "${@'didymos_bundle_to_imgdeploydir' if d.getVar('DIDYMOS_BUNDLE_MODE') == 'image' else ''}"
didymos_bundle_to_imgdeploydir() {
    install -m 0644 ${DIDYMOS_BUNDLE_OUTPUT} ${IMGDEPLOYDIR}/${DIDYMOS_BUNDLE_NAME}.raucb
    ln -sf ${DIDYMOS_BUNDLE_NAME}.raucb ${IMGDEPLOYDIR}/${DIDYMOS_BUNDLE_LINK_NAME}.raucb
}

# (The tasks are added in the anonymous function above: which ones depends on
# the mode.)
SSTATE_SKIP_CREATION:task-deploy = "1"

do_deploy() {
    install -d ${DEPLOYDIR}
    install -m 0644 ${DIDYMOS_BUNDLE_OUTPUT} ${DEPLOYDIR}/${DIDYMOS_BUNDLE_NAME}.raucb
    ln -sf ${DIDYMOS_BUNDLE_NAME}.raucb ${DEPLOYDIR}/${DIDYMOS_BUNDLE_LINK_NAME}.raucb
}
