#!/usr/bin/env python3
"""Every file:// a recipe, append or class in the layer fetches must exist.

Looks where bitbake looks: FILESEXTRAPATHS entries the file sets (with
THISDIR, DIDYMOS_LAYERDIR and DIDYMOS_SRCTREE resolved), then the recipe's
own directory's ${BPN}, ${BP} and files/ folders. Also checks the md5 of
every LIC_FILES_CHKSUM file:// that points into the source tree.

    check_file_uris.py LAYER SRCTREE
"""

import hashlib
import os
import re
import sys

FILE_RE = re.compile(r'file://([^\s;"\'\\)]+)((?:;[^\s"\'\\]*)?)')
EXTRA_RE = re.compile(r'^FILESEXTRAPATHS:prepend(?::[a-z0-9-]+)?\s*:?=\s*"([^"]*)"', re.M)


def recipe_names(path):
    base = os.path.basename(path)
    stem = re.sub(r"\.(bb|bbappend|bbclass|inc)$", "", base)
    bpn, _, pv = stem.partition("_")
    return bpn, ("%s-%s" % (bpn, pv)) if pv else bpn


def main():
    layer, srctree = (os.path.abspath(p) for p in sys.argv[1:3])
    problems = []
    checked = 0
    for root, _, files in os.walk(layer):
        for name in sorted(files):
            if not name.endswith((".bb", ".bbappend", ".bbclass", ".inc")):
                continue
            path = os.path.join(root, name)
            text = open(path, encoding="utf-8").read()
            subst = {"THISDIR": root, "DIDYMOS_LAYERDIR": layer, "DIDYMOS_SRCTREE": srctree}
            search = []
            for entry in EXTRA_RE.findall(text):
                for part in entry.split(":"):
                    for k, v in subst.items():
                        part = part.replace("${%s}" % k, v)
                    if part.strip():
                        search.append(part.strip())
            bpn, bp = recipe_names(path)
            search += [os.path.join(root, bpn), os.path.join(root, bp), os.path.join(root, "files")]
            for uri, params in FILE_RE.findall(text):
                rel = os.path.relpath(path, layer)
                if "LIC_FILES_CHKSUM" in text and "md5=" in params:
                    if uri.startswith("${COMMON_LICENSE_DIR}"):
                        continue
                    # A license file inside the fetched source tree.
                    target = os.path.join(srctree, uri)
                    if not os.path.isfile(target):
                        problems.append("%s: license file %s not in the source tree" % (rel, uri))
                        continue
                    opts = dict(p.split("=", 1) for p in params.strip(";").split(";") if "=" in p)
                    lines = open(target, "rb").read().splitlines(keepends=True)
                    begin = int(opts.get("beginline", 1))
                    end = int(opts.get("endline", len(lines)))
                    digest = hashlib.md5(b"".join(lines[begin - 1:end])).hexdigest()
                    if digest != opts.get("md5"):
                        problems.append("%s: LIC_FILES_CHKSUM for %s lines %d-%d is md5=%s, the file has %s"
                                        % (rel, uri, begin, end, opts.get("md5"), digest))
                    checked += 1
                    continue
                if "${" in uri:
                    problems.append("%s: file://%s uses a variable; cannot check it" % (rel, uri))
                    continue
                found = [p for p in (os.path.join(s, uri) for s in search) if os.path.exists(p)]
                if not found:
                    problems.append("%s: file://%s is in none of %s" % (rel, uri, ", ".join(
                        os.path.relpath(s, srctree) for s in search)))
                checked += 1
            # Files a recipe installs from the fetched didymos source tree.
            if "DIDYMOS_SRCTREE" in text or "didymos.inc" in name:
                for src in re.findall(r'\$\{S\}/([A-Za-z0-9_.\-]+/[A-Za-z0-9_.\-/]+)', text):
                    if not os.path.isfile(os.path.join(srctree, src)):
                        problems.append("%s: installs ${S}/%s, which is not in the source tree"
                                        % (os.path.relpath(path, layer), src))
                    checked += 1
    for p in problems:
        print("MISSING " + p)
    print("%d file:// references checked, %d missing" % (checked, len(problems)))
    return 1 if problems or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
