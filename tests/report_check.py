#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The ridership report as a person sees it (test_ridership): renders REPORT.html in headless
Chromium (Debian's chromium), reads the DOM after its scripts ran and takes a screenshot, then
checks that every title named on the command line is an <h2> of the page, that every chart
canvas was drawn (its own ink share, data-ink) and that the screenshot is not blank where each
canvas lies (its box, data-box, cut out of the PNG and its non-white pixels counted).
Usage: report_check.py REPORT.html TITLE... ; exit 0 when all hold, else 1 naming what failed."""
import html
import os
import re
import struct
import subprocess
import sys
import tempfile
import zlib

WIDTH, HEIGHT = 1200, 9000
SCALE = 0.5     # the screenshot at half size: a quarter of the pixels to decode
CHROMIUM = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--force-device-scale-factor=%g" % SCALE, "--window-size=%d,%d" % (WIDTH, HEIGHT)]


def png_rows(path):
    """The rows of an 8-bit RGB or RGBA, non-interlaced PNG as bytes, and bytes per pixel."""
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, w = 8, b"", 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 8 or color not in (2, 6) or interlace:
                raise ValueError("PNG form not handled: depth %d color %d" % (depth, color))
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw, stride, rows, prev = zlib.decompress(idat), w * bpp, [], bytearray(w * bpp)
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return rows, bpp


def ink(rows, bpp, x, y, w, h):
    """The share of non-white pixels in the box."""
    n = 0
    for row in rows[y:y + h]:
        for i in range(x * bpp, min(len(row), (x + w) * bpp), bpp):
            if row[i] < 240 or row[i + 1] < 240 or row[i + 2] < 240:
                n += 1
    return n / float(max(1, w * h))


def main():
    report, titles = os.path.abspath(sys.argv[1]), sys.argv[2:]
    url = "file://" + report
    dom = subprocess.run(CHROMIUM + ["--dump-dom", url], capture_output=True, text=True,
                         timeout=120).stdout
    failed = []
    if 'data-drawn="yes"' not in dom:
        failed.append("the page's script did not finish")
    heads = [html.unescape(h) for h in re.findall(r"<h2>([^<]*)</h2>", dom)]
    failed += ["no title %r (titles: %s)" % (t, heads) for t in titles if t not in heads]
    canvases = re.findall(r'<canvas id="([^"]+)"[^>]*data-ink="([0-9.]+)" data-box="([0-9,]+)"',
                          dom)
    if not canvases:
        failed.append("no chart drawn")
    with tempfile.TemporaryDirectory() as tmp:
        shot = os.path.join(tmp, "shot.png")
        subprocess.run(CHROMIUM + ["--screenshot=" + shot, url], capture_output=True,
                       timeout=120)
        rows, bpp = png_rows(shot)
    for cid, own, box in canvases:
        x, y, w, h = (int(int(v) * SCALE) for v in box.split(","))
        seen = ink(rows, bpp, x, y, w, h) if y + h <= len(rows) else -1
        if float(own) < 0.005 or seen < 0.005:
            failed.append("chart %s blank (ink %s drawn, %.4f on the screenshot)" %
                          (cid, own, seen))
    for f in failed:
        print("report_check: " + f)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
