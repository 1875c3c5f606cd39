#!/usr/bin/env python3
"""Checks what tests/yocto/bitbake.sh recorded from a real bitbake run.

    check_bitbake.py OUT LAYER CARGO_LOCK

OUT is bitbake.sh's output directory, LAYER the meta-didymos the build
used, CARGO_LOCK the Cargo.lock at the recipe's pinned SRCREV. Prints one
line per failed check and exits 1 if there was any.
"""

import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bundle_cmdline import load_class  # noqa: E402

out, layer, cargo_lock = sys.argv[1:4]
sys.path.insert(0, os.path.join(layer, "lib"))
import didymos.crates  # noqa: E402

problems = []


def check(ok, what):
    if not ok:
        problems.append(what)
    return ok


def log(name):
    with open(os.path.join(out, name + ".log"), encoding="utf-8", errors="replace") as f:
        return f.read()


def status(name):
    with open(os.path.join(out, name + ".rc")) as f:
        return int(f.read())


ENV_CACHE = {}


def env(recipe):
    """bitbake -e RECIPE's variables (plain assignments), as a dict."""
    if recipe not in ENV_CACHE:
        values = {}
        for m in re.finditer(r'^(?:export )?([A-Za-z0-9_:.+\-${}/]+)="((?:[^"\\]|\\.)*)"$', log("env-" + recipe), re.M):
            values[m.group(1)] = m.group(2).replace('\\\n', ' ').replace('\\"', '"')
        ENV_CACHE[recipe] = values
    return ENV_CACHE[recipe]


def words(recipe, var):
    return (env(recipe).get(var) or "").split()


# --- every command ran, and nothing from the layer complained -------------------
commands = ["parse", "reparse", "graph"] + [n[:-4] for n in sorted(os.listdir(out))
                                             if n.startswith("env-") and n.endswith(".log")]
for name in commands:
    if not check(status(name) == 0, "bitbake (%s) failed with status %d" % (name, status(name))):
        problems.append("\n".join(log(name).splitlines()[-30:]))
    for line in log(name).splitlines():
        if line.startswith("ERROR:"):
            check(False, "bitbake (%s): %s" % (name, line))
        elif line.startswith("WARNING:"):
            ours = re.search(r"didymos|meta-product|product-image", line)
            check(not ours, "bitbake (%s) warns about the layer: %s" % (name, line))
            if not ours:
                print("note: bitbake (%s), not from the layer: %s" % (name, line))

parsed = re.search(r"Parsing of (\d+) \.bb files complete \((\d+) cached, (\d+) parsed\)\. .*?(\d+) errors", log("parse"))
if check(parsed, "bitbake -p printed no parse summary"):
    check(parsed.group(4) == "0", "bitbake -p: %s parse errors" % parsed.group(4))
# (bitbake prints a parse summary only when it parsed something.)
again = re.search(r"\((\d+) cached, (\d+) parsed\)", log("reparse"))
check("Loaded " in log("reparse") and (not again or again.group(2) == "0"),
      "a second bitbake -p parsed recipes again (%s): a recipe's parse cache is never valid"
      % (again.group(0) if again else "no cache loaded"))

# --- the task graph resolves every recipe ------------------------------------------
with open(os.path.join(out, "pn-buildlist")) as f:
    buildlist = set(f.read().split())
for pn in ("didymos", "didymos-native", "nativesdk-didymos", "didymos-conf", "didymos-boot",
           "initramfs-module-didymos", "didymos-initramfs", "didymos-image-minimal",
           "didymos-bundle-minimal", "product-image"):
    check(pn in buildlist, "bitbake -g: %s is not in the build" % pn)
check("didymos-conf-native" not in buildlist, "bitbake -g: the build needs didymos-conf-native")
with open(os.path.join(out, "task-depends.dot")) as f:
    edges = set(re.findall(r'^"([^"]+)" -> "([^"]+)"$', f.read(), re.M))


def edge(a, b, why):
    check((a, b) in edges, "task graph: %s does not depend on %s (%s)" % (a, b, why))


# --- the didymos recipe ---------------------------------------------------------------
recipe = open(os.path.join(layer, "recipes-didymos/didymos/didymos_git.bb")).read()
srcrev = re.search(r'^SRCREV = "([0-9a-f]{40})"$', recipe, re.M).group(1)
check(env("didymos").get("SRCREV") == srcrev, "didymos: SRCREV is %r, the recipe pins %s"
      % (env("didymos").get("SRCREV"), srcrev))
uris = words("didymos", "SRC_URI")
check(uris[:1] == ["git://github.com/didymos-ota/didymos.git;protocol=https;branch=main;destsuffix=didymos"],
      "didymos: SRC_URI starts with %r" % uris[:1])
check(not any(u.startswith("file://") or "protocol=file" in u for u in uris),
      "didymos: SRC_URI fetches from the local file system: %s" % [u for u in uris if "file" in u])
with open(cargo_lock, encoding="utf-8") as f:
    wanted = {"crate://crates.io/%s/%s" % (n, v) for n, v, _ in didymos.crates.registry_crates(f.read())}
got = {u for u in uris if u.startswith("crate://")}
check(got == wanted, "didymos: SRC_URI's crates differ from Cargo.lock at SRCREV: missing %s, extra %s"
      % (sorted(wanted - got)[:5], sorted(got - wanted)[:5]))
for dep in ("openssl", "cargo-native", "rust-native"):
    check(dep in words("didymos", "DEPENDS"), "didymos: DEPENDS lacks %s: %s" % (dep, words("didymos", "DEPENDS")))
for pkg, deps in (("didymos", ["didymos-conf", "grub-editenv"]), ("didymos-service", ["didymos", "dbus"]),
                  ("didymos-mark-good", ["didymos"]), ("didymos-setup-root", ["didymos-conf"])):
    have = words("didymos", "RDEPENDS:" + pkg)
    check(sorted(have) == sorted(deps), "didymos: RDEPENDS:%s is %s, expected %s" % (pkg, have, deps))
overrides = env("didymos").get("OVERRIDES", "").split(":")
check("didymos-ab" in overrides, "OVERRIDES lacks the distro feature's didymos-ab: %s" % overrides)
check("didymos" not in overrides, "OVERRIDES holds didymos, the recipe's own name: %s" % overrides)
edge("didymos.do_configure", "didymos.do_didymos_rust_check", "the Rust version is checked before cargo runs")
edge("didymos.do_didymos_rust_check", "didymos.do_prepare_recipe_sysroot", "it runs the sysroot's rustc")

# didymos-native: a build tool, with no device configuration or bootloader tools.
for var, value in env("didymos-native").items():
    if var.startswith("RDEPENDS") and ":class-" not in var:
        check("didymos-conf" not in value and "grub" not in value,
              "didymos-native: %s = %r" % (var, value))
check(words("didymos-native", "PACKAGECONFIG") == [], "didymos-native: PACKAGECONFIG = %s"
      % words("didymos-native", "PACKAGECONFIG"))
check("openssl-native" in words("didymos-native", "DEPENDS"), "didymos-native: DEPENDS lacks openssl-native")

# The Rust check, as the task runs it, against the Rust this release's oe-core ships.
defaults, source = load_class(os.path.join(layer, "recipes-didymos/didymos/didymos.inc"))
scope = {}
exec(compile(source, "didymos.inc", "exec"), scope)
cargo_toml = open(os.path.join(layer, "../../Cargo.toml")).read()
hint = env("didymos").get("DIDYMOS_RUST_LAYER_HINT", "")
rustversion = env("didymos").get("RUSTVERSION", "").rstrip("%")
need = re.search(r'^rust-version = "([0-9.]+)"', cargo_toml, re.M).group(1)
message = scope["didymos_rust_check"](cargo_toml, "rustc %s (oe-core)" % rustversion, hint)
older = tuple(map(int, rustversion.split("."))) < tuple(map(int, need.split(".")))
if older:
    check(message and "meta-lts-mixins" in message and need in message and rustversion in message,
          "the Rust check lets this release's Rust %s through (need %s): %r" % (rustversion, need, message))
else:
    check(message is None, "the Rust check refuses Rust %s: %r" % (rustversion, message))
host = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout
check(scope["didymos_rust_check"](cargo_toml, host, hint) is None,
      "the Rust check refuses the Rust that builds didymos here (%s)" % host.strip())

# A local checkout (EXTERNALSRC): its own crates, and no git fetch.
ext = words("externalsrc", "SRC_URI")
check(ext == ["crate://crates.io/itoa/1.0.19"],
      "didymos with EXTERNALSRC: SRC_URI is %s, expected the checkout's one crate" % ext)
check(env("externalsrc").get("S", "").endswith("/checkout"),
      "didymos with EXTERNALSRC: S = %r" % env("externalsrc").get("S"))

# The old distro feature name gets a message naming the new one.
old = log("old-feature")
check(status("old-feature") != 0 and 'the distro feature is called "didymos-ab"' in old,
      "DISTRO_FEATURES with the old name \"didymos\" is not refused by name:\n%s"
      % "\n".join(old.splitlines()[-8:]))

# --- the distro feature's appends ---------------------------------------------------------
check("file://didymos.cfg" in words("linux-yocto", "SRC_URI"), "linux-yocto: SRC_URI lacks file://didymos.cfg")
for module in ("configfile", "echo", "eval", "loadenv", "test"):
    check(module in words("grub-efi", "GRUB_BUILDIN"), "grub-efi: GRUB_BUILDIN lacks %s" % module)

# --- the bundle class, in a bundle recipe and in an image recipe ---------------------------
b = env("didymos-bundle-minimal")
check(b.get("DIDYMOS_BUNDLE_MODE") == "recipe", "didymos-bundle-minimal: mode %r" % b.get("DIDYMOS_BUNDLE_MODE"))
check(b.get("DIDYMOS_BUNDLE_ROOTFS") == b.get("DEPLOY_DIR_IMAGE", "?") + "/didymos-image-minimal-qemux86-64.rootfs.tar.zst",
      "didymos-bundle-minimal: DIDYMOS_BUNDLE_ROOTFS = %r" % b.get("DIDYMOS_BUNDLE_ROOTFS"))
edge("didymos-bundle-minimal.do_didymos_bundle", "didymos-image-minimal.do_image_complete",
     "a bundle recipe's bundle is made after the image is complete")
edge("didymos-bundle-minimal.do_didymos_bundle", "didymos-native.do_populate_sysroot", "it runs didymos-native")
edge("didymos-bundle-minimal.do_deploy", "didymos-bundle-minimal.do_didymos_bundle", "do_deploy deploys the bundle")
p = env("product-image")
check(p.get("DIDYMOS_BUNDLE_MODE") == "image", "product-image: mode %r" % p.get("DIDYMOS_BUNDLE_MODE"))
check("tar.zst" in words("product-image", "IMAGE_FSTYPES"), "product-image: IMAGE_FSTYPES lacks tar.zst")
check(p.get("DIDYMOS_BUNDLE_ROOTFS") == "%s/%s.rootfs.tar.zst" % (p.get("IMGDEPLOYDIR"), p.get("IMAGE_NAME")),
      "product-image: DIDYMOS_BUNDLE_ROOTFS = %r" % p.get("DIDYMOS_BUNDLE_ROOTFS"))
edge("product-image.do_didymos_bundle", "product-image.do_image_tar", "the bundle is made from the image's tarball")
edge("product-image.do_image_complete", "product-image.do_didymos_bundle",
     "an image's bundle is made before do_image_complete deploys the image")
edge("product-image.do_didymos_bundle", "didymos-native.do_populate_sysroot", "it runs didymos-native")
check("product-image.do_deploy" not in {a for a, _ in edges}, "product-image got a do_deploy task")
# The device image: the factory step between the tarball and the disk.
edge("didymos-image-minimal.do_didymos_factory", "didymos-image-minimal.do_image_tar", "the factory step signs the tarball")
edge("didymos-image-minimal.do_image_wic", "didymos-image-minimal.do_didymos_factory", "wic takes the staged partitions")
edge("didymos-image-minimal.do_rootfs", "didymos-initramfs.do_image_complete", "the initramfs goes into /boot")

for p in problems:
    print(p)
sys.exit(1 if problems else 0)
