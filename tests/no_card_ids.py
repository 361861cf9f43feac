#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""No raw card id anywhere a run left behind.

usage: no_card_ids.py DIR [--id HEX]... [--text TEXT]...

Finds the cards of a run in DIR itself: every FeliCa IDm (idm=, felica:) and Type B PUPI (pupi=)
in its scenario and load files, and the serial number and subject CN of every mock My Number
card (*/auth.der, read with openssl). --id and --text add more. Then every file the run wrote
(databases with their -wal/-shm, logs, HMI logs, event streams, exports, dumps: everything but
its inputs) is searched for each id as raw bytes and as hex in upper and lower case, and for
each subject as text. Prints one line per finding; exits 1 if there is any, 2 on bad usage.
"""
import os
import re
import subprocess
import sys

# What a run is given, not what it writes: scenarios, load files, configuration, keys,
# certificates, the cards themselves, fare feeds and journeys, a PIN pad's file.
INPUT_SUFFIXES = (".txt", ".conf", ".in", ".key", ".crt", ".pem", ".csr", ".cnf", ".sh", ".csv")
INPUT_NAMES = {"auth.der", "auth.key", "ca.der"}


def card_ids(root):
    ids, texts = set(), set()
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            if name.endswith(".txt"):
                with open(path, "rb") as f:
                    data = f.read().decode("utf-8", "replace")
                for m in re.finditer(r"(?:idm=|felica:)([0-9A-Fa-f]{16})\b", data):
                    ids.add(m.group(1).lower())
                for m in re.finditer(r"pupi=([0-9A-Fa-f]{8})\b", data):
                    ids.add(m.group(1).lower())
            elif name == "auth.der":
                out = subprocess.run(
                    ["openssl", "x509", "-inform", "DER", "-in", path, "-noout", "-serial",
                     "-subject", "-nameopt", "multiline,utf8,-esc_msb"],
                    capture_output=True, text=True, check=True).stdout
                serial = re.search(r"^serial=([0-9A-Fa-f]+)", out, re.M).group(1)
                if len(serial) % 2:
                    serial = "0" + serial
                ids.add(serial.lower())
                for m in re.finditer(r"^\s*commonName\s*=\s*(.+)$", out, re.M):
                    texts.add(m.group(1).strip())
    return ids, texts


def is_output(root, path):
    name = os.path.basename(path)
    rel = os.path.relpath(path, root)
    if name in INPUT_NAMES or name.endswith(INPUT_SUFFIXES):
        # the exports' certificates are written by the run, but hold no card
        return False
    return not rel.startswith("fares" + os.sep)


def main(argv):
    if len(argv) < 2 or not os.path.isdir(argv[1]):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    root = argv[1]
    ids, texts = card_ids(root)
    rest = argv[2:]
    while rest:
        if len(rest) < 2 or rest[0] not in ("--id", "--text"):
            print("no_card_ids: expected --id HEX or --text TEXT, got %r" % rest[0],
                  file=sys.stderr)
            return 2
        (ids if rest[0] == "--id" else texts).add(rest[1].lower() if rest[0] == "--id"
                                                  else rest[1])
        rest = rest[2:]
    # A serial of fewer than 4 bytes would match by chance somewhere in a signature.
    short = sorted(i for i in ids if len(i) < 8)
    if short:
        print("no_card_ids: ids too short to search for: %s" % " ".join(short), file=sys.stderr)
        return 2
    needles = []
    for i in sorted(ids):
        raw = bytes.fromhex(i)
        needles += [(raw, "bytes %s" % i), (i.encode(), "hex %s" % i),
                    (i.upper().encode(), "hex %s" % i.upper())]
    needles += [(t.encode(), "subject %r" % t) for t in sorted(texts)]
    found, scanned = 0, 0
    for dirpath, _, files in os.walk(root):
        for name in sorted(files):
            path = os.path.join(dirpath, name)
            if not is_output(root, path) or not os.path.isfile(path):
                continue
            scanned += 1
            with open(path, "rb") as f:
                data = f.read()
            for needle, what in needles:
                if needle in data:
                    print("no_card_ids: %s holds %s" % (os.path.relpath(path, root), what))
                    found += 1
    print("no_card_ids: %d cards' ids and %d subjects searched in %d files: %d found"
          % (len(ids), len(texts), scanned, found))
    return 1 if found or not ids or not scanned else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
