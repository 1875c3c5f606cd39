#!/usr/bin/env python3
"""The layer's kernel fragment sets every option docs/boot.md says boot needs.

docs/boot.md lists them in the first fenced block after a heading named
"Kernel configuration", one CONFIG_ line each (`CONFIG_X=y`, `=m`, a value, or
`# CONFIG_X is not set`). `=m` is satisfied by `=y` (built in is stricter).
Without such a block, every `CONFIG_X` named in the section under a heading
"Kernel requirements" (or "Kernel configuration") must be enabled (y or m).

    check_kernel_fragment.py BOOT_MD FRAGMENT
"""

import re
import sys

SET_RE = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
UNSET_RE = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")


def options(lines):
    out = {}
    for line in lines:
        line = line.strip()
        m = SET_RE.match(line)
        if m:
            out[m.group(1)] = m.group(2)
            continue
        m = UNSET_RE.match(line)
        if m:
            out[m.group(1)] = "n"
    return out


def section(lines, start):
    """The lines under the heading at `start`, up to the next heading of its level or above."""
    level = len(lines[start]) - len(lines[start].lstrip("#"))
    out, fenced = [], False
    for line in lines[start + 1:]:
        if line.strip().startswith("```"):
            fenced = not fenced
        m = re.match(r"^(#+)\s", line)
        if m and not fenced and len(m.group(1)) <= level:
            break
        out.append(line)
    return out


def required(markdown, path):
    lines = markdown.splitlines()
    start = next((i for i, l in enumerate(lines)
                  if re.match(r"^#+\s+Kernel configuration\s*$", l.strip(), re.I)), None)
    if start is None:
        start = next((i for i, l in enumerate(lines)
                      if re.match(r"^#+\s+Kernel requirements\s*$", l.strip(), re.I)), None)
        if start is None:
            sys.exit('%s has no heading "Kernel configuration" (or "Kernel requirements"); the boot '
                     'path\'s kernel options are expected there' % path)
        names = sorted(set(re.findall(r"\bCONFIG_[A-Z0-9_]+\b", "\n".join(section(lines, start)))))
        if not names:
            sys.exit('%s: no CONFIG_ option named under "Kernel requirements"' % path)
        return {n: "m" for n in names}
    block, inside = [], False
    for line in lines[start + 1:]:
        if line.strip().startswith("```"):
            if inside:
                break
            inside = True
            continue
        if re.match(r"^#+\s", line) and not inside:
            break
        if inside:
            block.append(line)
    wanted = options(block)
    if not wanted:
        sys.exit('%s: no CONFIG_ lines in a fenced block under "Kernel configuration"' % path)
    return wanted


def main():
    boot_md, fragment = sys.argv[1:3]
    try:
        text = open(boot_md, encoding="utf-8").read()
    except FileNotFoundError:
        sys.exit("%s does not exist yet: it must list the kernel options the boot path needs "
                 '(fenced block of CONFIG_ lines under a heading "Kernel configuration")' % boot_md)
    wanted = required(text, boot_md)
    have = options(open(fragment, encoding="utf-8").read().splitlines())
    problems = []
    for opt, value in sorted(wanted.items()):
        got = have.get(opt)
        if value == "n":
            if got not in (None, "n"):
                problems.append("%s must not be set, the fragment sets %s=%s" % (opt, opt, got))
        elif got is None:
            problems.append("%s is not enabled (needs y or m)" % opt if value == "m" else "%s=%s is missing" % (opt, value))
        elif value == "m" and got in ("y", "m"):
            continue
        elif got != value:
            problems.append("%s: docs/boot.md needs %s, the fragment sets %s" % (opt, value, got))
    for p in problems:
        print("KERNEL " + p)
    print("%d options required by %s, %d not satisfied by %s" % (len(wanted), boot_md, len(problems), fragment))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
