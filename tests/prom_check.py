#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Prometheus text format 0.0.4 for the metrics tests (tests/backend/test_metrics.sh).

  prom_check.py scrape URL OUT [DEADLINE_S]  GET URL until it answers (or the deadline):
                                             200, Content-Type 0.0.4, body to OUT
  prom_check.py status METHOD URL            prints the HTTP status of METHOD URL
  prom_check.py check FILE                   the syntax: HELP/TYPE once per family and
                                             before its samples, every sample
                                             `name{labels} value`, histograms' buckets
                                             cumulative, ending with +Inf equal to _count
  prom_check.py value FILE 'name{labels}'    prints that sample's value (exit 1: absent)
  prom_check.py sum FILE name                prints the sum of the family's samples
  prom_check.py notls HOST PORT              a TLS handshake without a client certificate
                                             (expected to fail: exit 0 when it did)
Exit 1 with a message on stderr naming what is wrong."""
import re
import socket
import ssl
import sys
import time
import urllib.error
import urllib.request

CTYPE = "text/plain; version=0.0.4; charset=utf-8"
NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
SAMPLE = re.compile(r"^(" + NAME + r")(\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\\\|\\"|\\n)*)"(,|$)')


def fail(msg):
    sys.exit("prom_check: " + msg)


def parse_labels(text, line):
    labels, pos = {}, 0
    while pos < len(text):
        m = LABEL.match(text, pos)
        if m is None:
            fail("bad labels in: %s" % line)
        if m.group(1) in labels:
            fail("label %s twice in: %s" % (m.group(1), line))
        labels[m.group(1)] = m.group(2)
        pos = m.end()
    return labels


def parse(text):
    """[(name, labels, value)] after checking the syntax; families' types."""
    types, helps, seen, samples = {}, set(), set(), []
    if not text.endswith("\n"):
        fail("the text does not end with a newline")
    for line in text.split("\n")[:-1]:
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) < 3 or parts[1] not in ("HELP", "TYPE") or not re.fullmatch(NAME, parts[2]):
                fail("bad comment line: %s" % line)
            fam = parts[2]
            if fam in seen:
                fail("%s %s after its samples" % (parts[1], fam))
            if parts[1] == "HELP":
                if fam in helps:
                    fail("HELP %s twice" % fam)
                helps.add(fam)
            else:
                if fam in types or len(parts) != 4 or parts[3] not in (
                        "counter", "gauge", "histogram", "summary", "untyped"):
                    fail("bad or second TYPE line: %s" % line)
                types[fam] = parts[3]
            continue
        m = SAMPLE.match(line)
        if m is None:
            fail("not `name{labels} value`: %r" % line)
        name, labels = m.group(1), parse_labels(m.group(3) or "", line)
        try:
            value = float(m.group(4))
        except ValueError:
            fail("bad value in: %s" % line)
        fam = name
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and types.get(name[: -len(suffix)]) == "histogram":
                fam = name[: -len(suffix)]
        if fam not in types or fam not in helps:
            fail("sample %s before (or without) its HELP and TYPE" % name)
        if types[fam] == "counter" and not name.endswith("_total"):
            fail("counter %s does not end in _total" % name)
        seen.add(fam)
        samples.append((name, labels, value))
    for fam, typ in types.items():
        if typ == "histogram":
            check_histogram(fam, samples)
    return samples


def check_histogram(fam, samples):
    series = {}
    for name, labels, value in samples:
        if name not in (fam + "_bucket", fam + "_count", fam + "_sum"):
            continue
        rest = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        s = series.setdefault(rest, {"buckets": [], "count": None, "sum": None})
        if name == fam + "_bucket":
            if "le" not in labels:
                fail("%s_bucket without le" % fam)
            s["buckets"].append((float(labels["le"]), value))
        elif name == fam + "_count":
            s["count"] = value
        elif name == fam + "_sum":
            s["sum"] = value
    if not series:
        fail("histogram %s has no samples" % fam)
    for s in series.values():
        b = s["buckets"]
        if not b or b[-1][0] != float("inf"):
            fail("%s: buckets do not end with le=\"+Inf\"" % fam)
        for (le0, v0), (le1, v1) in zip(b, b[1:]):
            if le1 <= le0 or v1 < v0:
                fail("%s: buckets not increasing in le and cumulative" % fam)
        if s["count"] is None or s["sum"] is None or s["count"] != b[-1][1]:
            fail("%s: _count missing or not the +Inf bucket" % fam)


def value(samples, spec):
    m = re.fullmatch(r"(" + NAME + r")(\{(.*)\})?", spec)
    want = parse_labels(m.group(3) or "", spec)
    for name, labels, v in samples:
        if name == m.group(1) and labels == want:
            return v
    return None


def main(argv):
    if len(argv) >= 3 and argv[0] == "scrape":
        deadline = time.monotonic() + (float(argv[3]) if len(argv) > 3 else 60)
        while True:
            try:
                with urllib.request.urlopen(argv[1], timeout=10) as r:
                    if r.status != 200 or r.headers["Content-Type"] != CTYPE:
                        fail("%s: status %d, Content-Type %s" % (argv[1], r.status,
                                                                   r.headers["Content-Type"]))
                    open(argv[2], "wb").write(r.read())
                    return 0
            except (urllib.error.URLError, ConnectionError) as e:
                if time.monotonic() > deadline:
                    fail("%s: %s" % (argv[1], e))
                time.sleep(0.05)
    if len(argv) == 3 and argv[0] == "status":
        req = urllib.request.Request(argv[2], method=argv[1])
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                print(r.status)
        except urllib.error.HTTPError as e:
            print(e.code)
        return 0
    if len(argv) == 2 and argv[0] == "check":
        parse(open(argv[1]).read())
        return 0
    if len(argv) == 3 and argv[0] in ("value", "sum"):
        samples = parse(open(argv[1]).read())
        if argv[0] == "sum":
            v = sum(v for n, _, v in samples if n == argv[2])
        else:
            v = value(samples, argv[2])
        if v is None:
            fail("%s: no sample %s" % (argv[1], argv[2]))
        print("%g" % v)
        return 0
    if len(argv) == 3 and argv[0] == "notls":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with socket.create_connection((argv[1], int(argv[2])), timeout=10) as s:
            try:
                with ctx.wrap_socket(s) as t:
                    t.sendall(b"x")
                    t.recv(1)
            except (ssl.SSLError, ConnectionError, OSError):
                return 0
        fail("a handshake without a client certificate was not refused")
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
