#!/usr/bin/env python3
"""Prints a configuration block from a document, so the test builds with
exactly the lines the document tells readers to write.

    doc_conf.py DOC NAME    the fenced block whose first line is "# conf/NAME"
"""

import re
import sys

doc, name = sys.argv[1:3]
text = open(doc, encoding="utf-8").read()
for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, re.M | re.S):
    lines = block.splitlines()
    if lines and lines[0].strip() == "# conf/%s" % name:
        print("\n".join(lines[1:]))
        sys.exit(0)
sys.exit("%s has no fenced block starting with \"# conf/%s\"" % (doc, name))
