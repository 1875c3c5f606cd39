#!/usr/bin/env python3
"""Prints a recipe's shell task with its variables expanded, ready for bash.

The recipe's own `??=`/`?=`/`=` single-line assignments are the defaults;
NAME=VALUE arguments come on top (what bitbake would know from elsewhere).
Only shell tasks written `do_x() {` … `}` are understood.

    bb_task.py RECIPE TASK NAME=VALUE...
"""

import re
import sys

from bundle_cmdline import DataStore, Fatal, load_class


def task_body(path, task):
    lines = open(path, encoding="utf-8").read().splitlines()
    start = next((i for i, l in enumerate(lines) if re.match(r"^(fakeroot\s+)?%s\(\)\s*\{\s*$" % re.escape(task), l)), None)
    if start is None:
        raise Fatal("%s has no shell task %s() { … }" % (path, task))
    body = []
    for line in lines[start + 1:]:
        if line.startswith("}"):
            return "\n".join(body)
        body.append(line)
    raise Fatal("%s: %s() has no closing brace" % (path, task))


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    path, task = sys.argv[1:3]
    defaults, _ = load_class(path)
    values = dict(defaults)
    for arg in sys.argv[3:]:
        name, _, value = arg.partition("=")
        values[name] = value
    try:
        print(DataStore(values).expand(task_body(path, task)))
    except Fatal as e:
        sys.exit(str(e))


if __name__ == "__main__":
    main()
