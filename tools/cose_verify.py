#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Independent checker for a kippu journal export (`kippuctl journal export DB DIR`).

DIR holds N.cose (one tagged COSE_Sign1 per record, named by sequence number) and
terminal.crt (PEM), or certificates.txt ("FIRST LAST cert-ID.crt" lines: which certificate
signed which records) with those certificates. A backend export (`kippuctl backend export`)
holds journals.txt and one such folder per epoch of the terminal (1/, 2/, ...), each a whole
chain from seq 1; each is checked. For every record this checks, without any kippu code or
CBOR library:
  - the COSE_Sign1 shape: tag 18, [protected, unprotected, payload, signature],
    protected == h'A10126' ({1: -7}, ES256), unprotected {4: kid}, 64-byte signature,
    no trailing bytes;
  - the ES256 signature over Sig_structure ["Signature1", protected, h'', payload], with the
    `openssl` command line and the public key of the certificate that covers the record;
  - the payload: a canonical CBOR map (RFC 8949 4.2.1) whose key 3 (seq) equals the file
    name, whose key 2 (terminal) equals the kid, and whose key 17 (prev) is the SHA-256 of
    the previous record's payload (32 zero bytes for seq 1); sequence numbers are gapless.

Prints "verified N records" and exits 0, or names the first bad file and why and exits 1
(2 for usage or environment problems). Python 3 standard library + openssl only.
"""
import hashlib
import os
import re
import subprocess
import sys
import tempfile

USAGE = "usage: cose_verify.py [--partial] DIR\n" \
        "  --partial  the export may start after seq 1 (the first record's prev is not checked)"

PROTECTED_ES256 = bytes.fromhex("A10126")
RECORD_KEYS = {  # key: (name, type, required)
    1: ("v", "uint", True), 2: ("terminal", "tstr", True), 3: ("seq", "uint", True),
    4: ("time", "uint", True), 5: ("kind", "tstr", True), 6: ("token", "bstr16", False),
    7: ("operator", "tstr", True), 8: ("route", "tstr", False), 9: ("stop", "tstr", False),
    10: ("product", "tstr", False), 11: ("ent", "uint", False), 12: ("rides", "int", True),
    13: ("amount", "int", True), 14: ("left", "int", False), 15: ("result", "tstr", True),
    16: ("reason", "tstr", True), 17: ("prev", "bstr32", True),
    18: ("via", "bstr16", False), 19: ("category", "tstr", False),
    20: ("event", "tstr", False), 21: ("fare", "tstr", False), 22: ("driver", "tstr", False),
}


class Bad(Exception):
    """A record that does not verify; the message says why."""


class Tag:
    def __init__(self, tag, value):
        self.tag, self.value = tag, value


# ---- a small, strict CBOR decoder (definite lengths only) ----

def _head(buf, pos):
    if pos >= len(buf):
        raise Bad("truncated CBOR")
    ib = buf[pos]
    major, info = ib >> 5, ib & 0x1F
    pos += 1
    if info < 24:
        return major, info, pos
    if info > 27:
        raise Bad("indefinite length or reserved value at byte %d" % (pos - 1))
    n = 1 << (info - 24)
    if pos + n > len(buf):
        raise Bad("truncated CBOR")
    return major, int.from_bytes(buf[pos:pos + n], "big"), pos + n


def _item(buf, pos, depth=0):
    if depth > 16:
        raise Bad("CBOR nested too deeply")
    major, arg, pos = _head(buf, pos)
    if major == 0:
        return arg, pos
    if major == 1:
        return -1 - arg, pos
    if major in (2, 3):
        if arg > len(buf) - pos:
            raise Bad("truncated CBOR string")
        raw = bytes(buf[pos:pos + arg])
        if major == 3:
            try:
                return raw.decode("utf-8"), pos + arg
            except UnicodeDecodeError:
                raise Bad("text string is not UTF-8")
        return raw, pos + arg
    if major == 4:
        if arg > len(buf) - pos:
            raise Bad("array longer than the data")
        out = []
        for _ in range(arg):
            v, pos = _item(buf, pos, depth + 1)
            out.append(v)
        return out, pos
    if major == 5:
        if arg > len(buf) - pos:
            raise Bad("map longer than the data")
        out, order = {}, []
        for _ in range(arg):
            k, pos = _item(buf, pos, depth + 1)
            if not isinstance(k, (int, str)):
                raise Bad("map key of an unsupported type")
            if k in out:
                raise Bad("duplicate map key %r" % (k,))
            v, pos = _item(buf, pos, depth + 1)
            out[k] = v
            order.append(k)
        return _Map(out, order), pos
    if major == 6:
        v, pos = _item(buf, pos, depth + 1)
        return Tag(arg, v), pos
    raise Bad("unexpected CBOR simple value or float")


class _Map(dict):
    def __init__(self, items, order):
        super().__init__(items)
        self.order = order


def cbor_decode(buf):
    value, pos = _item(buf, 0)
    if pos != len(buf):
        raise Bad("%d trailing bytes" % (len(buf) - pos))
    return value


def _enc_head(major, arg):
    if arg < 24:
        return bytes([major << 5 | arg])
    for info, n in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if arg < 1 << (8 * n):
            return bytes([major << 5 | info]) + arg.to_bytes(n, "big")
    raise Bad("integer too large")


def cbor_encode_canonical(v):
    """RFC 8949 4.2.1 deterministic encoding, for the canonical-form check."""
    if isinstance(v, bool) or v is None:
        raise Bad("unexpected value")
    if isinstance(v, int):
        return _enc_head(0, v) if v >= 0 else _enc_head(1, -1 - v)
    if isinstance(v, bytes):
        return _enc_head(2, len(v)) + v
    if isinstance(v, str):
        b = v.encode("utf-8")
        return _enc_head(3, len(b)) + b
    if isinstance(v, list):
        return _enc_head(4, len(v)) + b"".join(cbor_encode_canonical(i) for i in v)
    if isinstance(v, dict):
        items = sorted((cbor_encode_canonical(k), cbor_encode_canonical(x)) for k, x in v.items())
        return _enc_head(5, len(v)) + b"".join(k + x for k, x in items)
    if isinstance(v, Tag):
        return _enc_head(6, v.tag) + cbor_encode_canonical(v.value)
    raise Bad("unexpected value")


# ---- ECDSA via openssl ----

def _der_int(b):
    b = b.lstrip(b"\x00") or b"\x00"
    if b[0] & 0x80:
        b = b"\x00" + b
    return b"\x02" + bytes([len(b)]) + b


def rs_to_der(sig):
    """64-byte r||s (COSE) to a DER ECDSA-Sig-Value (what openssl dgst -verify reads)."""
    body = _der_int(sig[:32]) + _der_int(sig[32:])
    return b"\x30" + bytes([len(body)]) + body  # body is at most 70 bytes: short form


def openssl_verify(pubkey, data, sig, tmp):
    data_path = os.path.join(tmp, "tbs.bin")
    sig_path = os.path.join(tmp, "sig.der")
    with open(data_path, "wb") as f:
        f.write(data)
    with open(sig_path, "wb") as f:
        f.write(rs_to_der(sig))
    r = subprocess.run(["openssl", "dgst", "-sha256", "-verify", pubkey, "-signature", sig_path,
                        data_path], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return r.returncode == 0


# ---- the checks ----

def check_cose(raw):
    """Returns (kid, protected, payload, signature) of a well-formed COSE_Sign1."""
    obj = cbor_decode(raw)
    if not isinstance(obj, Tag) or obj.tag != 18:
        raise Bad("not tagged COSE_Sign1 (tag 18)")
    if raw[0] != 0xD2:
        raise Bad("tag 18 not in its one-byte form")
    arr = obj.value
    if not isinstance(arr, list) or len(arr) != 4:
        raise Bad("COSE_Sign1 is not an array of 4")
    protected, unprotected, payload, sig = arr
    if not isinstance(protected, bytes) or protected != PROTECTED_ES256:
        raise Bad("protected header is not {1: -7} (h'A10126')")
    if not isinstance(unprotected, dict) or set(unprotected) != {4} or \
            not isinstance(unprotected[4], bytes):
        raise Bad("unprotected header is not {4: kid}")
    if not isinstance(payload, bytes):
        raise Bad("payload is not a byte string")
    if not isinstance(sig, bytes) or len(sig) != 64:
        raise Bad("signature is not 64 bytes")
    if cbor_encode_canonical(obj) != raw:
        raise Bad("COSE_Sign1 is not canonically encoded")
    return unprotected[4], protected, payload, sig


def check_payload(payload):
    rec = cbor_decode(payload)
    if not isinstance(rec, dict):
        raise Bad("payload is not a map")
    for k, v in rec.items():
        if not isinstance(k, int) or k not in RECORD_KEYS:
            raise Bad("unknown payload key %r" % (k,))
        name, typ, _ = RECORD_KEYS[k]
        ok = {"uint": isinstance(v, int) and v >= 0,
              "int": isinstance(v, int),
              "tstr": isinstance(v, str),
              "bstr16": isinstance(v, bytes) and len(v) == 16,
              "bstr32": isinstance(v, bytes) and len(v) == 32}[typ]
        if not ok:
            raise Bad("payload field %s (%d) is not %s" % (name, k, typ))
    missing = [RECORD_KEYS[k][0] for k in RECORD_KEYS if RECORD_KEYS[k][2] and k not in rec]
    if missing:
        raise Bad("payload lacks " + ", ".join(missing))
    if rec[1] != 1:
        raise Bad("unknown record version %d" % rec[1])
    if cbor_encode_canonical(rec) != payload:
        raise Bad("payload is not canonical CBOR")
    return rec


def read_key(crt, tmp, cache):
    """(public key PEM path, CN) of a certificate file, read once with openssl."""
    if crt in cache:
        return cache[crt]
    pubkey = os.path.join(tmp, "pub%d.pem" % len(cache))
    r = subprocess.run(["openssl", "x509", "-in", crt, "-noout", "-pubkey"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if r.returncode != 0 or b"BEGIN PUBLIC KEY" not in r.stdout:
        raise Usage("%s: cannot read the public key: %s"
                    % (crt, r.stderr.decode(errors="replace").strip()))
    with open(pubkey, "wb") as f:
        f.write(r.stdout)
    r = subprocess.run(["openssl", "x509", "-in", crt, "-noout", "-subject",
                        "-nameopt", "multiline,utf8,-esc_msb"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    m = re.search(r"commonName\s*=\s*(.*)", r.stdout.decode("utf-8", errors="replace"))
    cache[crt] = (pubkey, m.group(1).strip() if m else None)
    return cache[crt]


class Usage(Exception):
    pass


def cert_ranges(d):
    """[(first, last, path)] from DIR/certificates.txt (a backend export), else the whole
    folder signed by DIR/terminal.crt."""
    listing = os.path.join(d, "certificates.txt")
    if not os.path.isfile(listing):
        crt = os.path.join(d, "terminal.crt")
        if not os.path.isfile(crt):
            raise Usage("%s: missing" % crt)
        return [(1, None, crt)]
    ranges = []
    with open(listing, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit() or \
                    not re.fullmatch(r"cert-[0-9]+\.crt", parts[2]):
                raise Usage("%s line %d: not 'FIRST LAST cert-ID.crt'" % (listing, n))
            ranges.append((int(parts[0]), int(parts[1]), os.path.join(d, parts[2])))
    return ranges


def cert_for(ranges, seq):
    for first, last, crt in ranges:
        if seq >= first and (last is None or seq <= last):
            return crt
    raise Bad("no certificate in certificates.txt covers record %d" % seq)


def verify_dir(d, partial, tmp, cache):
    """Checks one chain of records; returns the number verified, raises Usage or prints the
    first bad file and returns None."""
    ranges = cert_ranges(d)
    files = []
    for name in os.listdir(d):
        m = re.fullmatch(r"([0-9]+)\.cose", name)
        if m and not (len(m.group(1)) > 1 and m.group(1)[0] == "0"):
            files.append((int(m.group(1)), name))
        elif name.endswith(".cose"):
            print("cose_verify: %s: not named by a sequence number" % name, file=sys.stderr)
            return None
    files.sort()
    if not files:
        print("cose_verify: %s: no .cose files" % d, file=sys.stderr)
        return None

    prev_payload = None
    terminal = None
    cns = set()
    expect_seq = files[0][0]
    if expect_seq != 1 and not partial:
        print("%s: BAD: the export starts at seq %d, not 1 (use --partial for a partial "
              "export)" % (files[0][1], expect_seq))
        return None
    for seq, name in files:
        try:
            if seq != expect_seq:
                raise Bad("sequence gap: record %d is missing" % expect_seq)
            crt = cert_for(ranges, seq)
            pubkey, cn = read_key(crt, tmp, cache)
            cns.add(cn)
            with open(os.path.join(d, name), "rb") as f:
                raw = f.read()
            kid, protected, payload, sig = check_cose(raw)
            tbs = cbor_encode_canonical(["Signature1", protected, b"", payload])
            if not openssl_verify(pubkey, tbs, sig, tmp):
                raise Bad("signature does not verify with %s" % os.path.basename(crt))
            rec = check_payload(payload)
            if rec[3] != seq:
                raise Bad("payload seq %d does not match the file name" % rec[3])
            if kid != rec[2].encode("utf-8"):
                raise Bad("kid %r is not the payload's terminal %r" % (kid, rec[2]))
            if terminal is not None and rec[2] != terminal:
                raise Bad("terminal %r differs from the earlier records' %r"
                          % (rec[2], terminal))
            terminal = rec[2]
            if prev_payload is not None:
                want = hashlib.sha256(prev_payload).digest()
            elif seq == 1:
                want = bytes(32)
            else:
                want = None     # --partial: nothing to compare the first record with
            if want is not None and rec[17] != want:
                raise Bad("prev hash does not match record %d" % (seq - 1) if seq > 1
                          else "prev of record 1 is not 32 zero bytes")
        except Bad as e:
            print("%s: BAD: %s" % (os.path.join(d, name), e))
            return None
        except OSError as e:
            print("%s: BAD: %s" % (os.path.join(d, name), e))
            return None
        prev_payload = payload
        expect_seq = seq + 1
    for cn in cns:
        if cn is not None and cn != terminal:
            # DESIGN: the certificate names the terminal. Reported, not fatal: the
            # signatures above are what prove who wrote the records.
            print("note: certificate CN %r differs from terminal id %r" % (cn, terminal),
                  file=sys.stderr)
    return len(files)


def main(argv):
    args = argv[1:]
    partial = "--partial" in args
    args = [a for a in args if a != "--partial"]
    if len(args) != 1 or args[0].startswith("-"):
        print(USAGE, file=sys.stderr)
        return 2
    d = args[0]
    # A backend export: DIR/journals.txt and one folder per epoch, each a whole chain.
    if os.path.isfile(os.path.join(d, "journals.txt")):
        epochs = sorted(int(n) for n in os.listdir(d)
                        if n.isdigit() and os.path.isdir(os.path.join(d, n)))
        dirs = [os.path.join(d, str(e)) for e in epochs]
        if not dirs:
            print("cose_verify: %s: no epoch folders" % d, file=sys.stderr)
            return 1
    else:
        dirs = [d]
    counts = []
    try:
        with tempfile.TemporaryDirectory(prefix="cose_verify.") as tmp:
            cache = {}
            for sub in dirs:
                n = verify_dir(sub, partial, tmp, cache)
                if n is None:
                    return 1
                counts.append(n)
    except Usage as e:
        print("cose_verify: %s" % e, file=sys.stderr)
        return 2
    if len(counts) == 1:
        print("verified %d records" % counts[0])
    else:
        print("verified %d records in %d epochs (%s)" % (
            sum(counts), len(counts),
            ", ".join("epoch %d: %d" % (i + 1, n) for i, n in enumerate(counts))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
