#!/usr/bin/env python3
"""Prints the `didymos bundle create` command line didymos-bundle.bbclass runs.

Reads the class itself: its `??=`/`?=`/`=` defaults and its python functions
(didymos_bundle_argv and the helpers it calls) are evaluated against a small
stand-in for bitbake's datastore, with the variables given as NAME=VALUE
arguments on top. Output: one JSON array, the argv.

    bundle_cmdline.py CLASS NAME=VALUE...
"""

import json
import os
import re
import sys

VAR_RE = re.compile(r'^([A-Za-z0-9_\-]+)\s*(\?\?=|\?=|:=|=)\s*"(.*)"\s*$')
REF_RE = re.compile(r'\$\{([A-Za-z0-9_\-]+)\}')
PY_RE = re.compile(r'\$\{@(.+?)\}')


class Fatal(Exception):
    pass


class bb:
    """The few bb functions the class's python code calls."""

    @staticmethod
    def fatal(msg):
        raise Fatal(msg)

    @staticmethod
    def warn(msg):
        sys.stderr.write("WARNING: %s\n" % msg)

    @staticmethod
    def note(msg):
        pass

    error = warn


class DataStore:
    def __init__(self, values):
        self.values = values
        self.functions = {}

    def getVar(self, name, expand=True):
        value = self.values.get(name)
        if value is None or not expand:
            return value
        return self.expand(value)

    def expand(self, text, depth=0):
        if depth > 50:
            raise Fatal("variable expansion does not terminate: %s" % text)
        new = REF_RE.sub(lambda m: self.values.get(m.group(1), m.group(0)), text)
        new = PY_RE.sub(lambda m: str(eval(m.group(1), dict(self.functions, d=self, bb=bb, os=os))), new)
        if new == text:
            unresolved = REF_RE.findall(new)
            if unresolved:
                raise Fatal("unset variable(s) %s in %r; pass them as NAME=VALUE" % (", ".join(unresolved), text))
            return new
        return self.expand(new, depth + 1)


def load_class(path):
    """(defaults, python source of the top-level def functions)."""
    defaults = {}
    functions = []
    lines = open(path, encoding="utf-8").read().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("def "):
            block = [line]
            i += 1
            while i < len(lines) and (lines[i].startswith((" ", "\t")) or not lines[i].strip()):
                block.append(lines[i])
                i += 1
            functions.append("\n".join(block))
            continue
        m = VAR_RE.match(line)
        if m:
            name, op, value = m.groups()
            if op in ("=", ":=") or name not in defaults:
                defaults[name] = value
        i += 1
    return defaults, "\n".join(functions)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    defaults, source = load_class(sys.argv[1])
    values = dict(defaults)
    for arg in sys.argv[2:]:
        name, _, value = arg.partition("=")
        values[name] = value
    d = DataStore(values)
    scope = {"bb": bb, "os": os}
    exec(compile(source, sys.argv[1], "exec"), scope)
    d.functions = {k: v for k, v in scope.items() if callable(v)}
    if "didymos_bundle_argv" not in scope:
        sys.exit("%s defines no didymos_bundle_argv(d)" % sys.argv[1])
    try:
        if "didymos_bundle_check" in scope:
            scope["didymos_bundle_check"](d)
        argv = scope["didymos_bundle_argv"](d)
    except Fatal as e:
        sys.exit("the class would stop the build: %s" % e)
    print(json.dumps(argv))


if __name__ == "__main__":
    main()
