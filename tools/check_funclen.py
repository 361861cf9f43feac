#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""make check-deps, part 5: no function of the programs and libraries (tests apart) is longer
than the limit (150 lines by default). A function is what our style writes: a line starting
with "{" after its signature, up to the line starting with "}". Prints the longest ones.

Usage: check_funclen.py [--limit N] [--top N] FOLDER...
"""
import os
import re
import sys


def functions(path):
    """(lines, first line, name) of each function in a C file."""
    with open(path, encoding="utf-8", errors="replace") as fp:
        lines = fp.read().split("\n")
    start = None
    name = "?"
    for i, line in enumerate(lines):
        if line.startswith("{") and start is None:
            sig = ""
            j = i - 1
            while j >= 0 and lines[j].strip() and not lines[j].startswith(("}", "#")):
                sig = lines[j] + " " + sig
                if "(" in lines[j] and re.match(r"^[A-Za-z_]", lines[j]):
                    break
                j -= 1
            m = re.search(r"(\w+)\s*\(", sig)
            name = m.group(1) if m else "?"
            start = i
        elif line.startswith("}") and start is not None:
            yield i - start + 1, start + 1, name
            start = None


def main(argv):
    limit, top, folders = 150, 0, []
    args = iter(argv)
    for a in args:
        if a == "--limit":
            limit = int(next(args))
        elif a == "--top":
            top = int(next(args))
        else:
            folders.append(a)
    found = []
    for folder in folders:
        for root, _, files in os.walk(folder):
            for f in sorted(files):
                if f.endswith(".c"):
                    path = os.path.join(root, f)
                    for n, line, name in functions(path):
                        found.append((n, "%s:%d" % (path, line), name))
    found.sort(reverse=True)
    for n, where, name in found[:top]:
        print("  %4d  %s %s" % (n, where, name))
    long_ones = [f for f in found if f[0] > limit]
    for n, where, name in long_ones:
        print("check-deps: %s %s is %d lines (at most %d)" % (where, name, n, limit),
              file=sys.stderr)
    if not long_ones:
        print("check-deps: ok (%d functions, none longer than %d lines; the longest: %d)"
              % (len(found), limit, found[0][0] if found else 0))
    return 1 if long_ones else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
