#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Differential checks (make fuzz; README, Tests, "Fuzzing"), run with Debian's python3:

  diff_check.py DIFFDRV CORPUS

1. CBOR: the project's strict reader (kp_cbor_next, through DIFFDRV cbor) against
   python3-cbor2 on the same inputs: the fuzz corpora's seeds, values cbor2 encodes from a
   seeded generator, and damaged copies of both (truncated, bytes flipped). Where the
   project's reader accepts, cbor2 must accept and decode the same value; where it refuses,
   cbor2 must refuse. Left out: what the project does not read (floats, simple values,
   indefinite lengths: "unsupported"), maps with duplicate keys (cbor2 keeps the last),
   and values under a tag cbor2 gives a meaning to (dates, bignums, ...).
2. COSE_Sign1: kp_cose_verify1 (DIFFDRV cose) against an ES256 verification written here
   with python3-cryptography, with the certificate $KP_FUZZ_DATA/fuzz-cert.pem (made by make fuzz): records
   signed by python with its key, by the project (the corpus), and damaged copies. The
   project may refuse more (it takes only the canonical form it writes) but never accepts
   what cryptography refuses, and accepts every canonical one cryptography accepts.
Prints the counts; exits 1 on any disagreement, printing the input in hex."""
import io
import os
import random
import subprocess
import sys
import tempfile

import cbor2
import cbor2.decoder
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (decode_dss_signature,
                                                             encode_dss_signature)

SEMANTIC_TAGS = set(getattr(cbor2.decoder, "semantic_decoders", {}).keys()) | {
    0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 256, 258, 260, 261, 55799}
HERE = os.path.dirname(os.path.abspath(__file__))


class Skip(Exception):
    pass


def fmt(v):
    """A cbor2 value in the driver's notation (kippu-diffdrv.c)."""
    if isinstance(v, (bool, float, cbor2.CBORSimpleValue)) or v is cbor2.undefined:
        raise Skip(type(v).__name__)
    if v is None:
        return "null"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, bytes):
        return "h'" + v.hex() + "'"
    if isinstance(v, str):
        return "t'" + v.encode("utf-8").hex() + "'"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(fmt(x) for x in v) + "]"
    if isinstance(v, dict) or type(v).__name__ == "FrozenDict":
        return "{%d|" % len(v) + ",".join(fmt(k) + ":" + fmt(x) for k, x in v.items()) + "}"
    if isinstance(v, cbor2.CBORTag):
        return "T%d(%s)" % (v.tag, fmt(v.value))
    raise Skip(type(v).__name__)


def py_decode(data):
    """('ok', value) or ('refuse', why)."""
    fp = io.BytesIO(data)
    try:
        v = cbor2.CBORDecoder(fp).decode()
    except RecursionError:
        return "refuse", "recursion"
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, MemoryError,
            EOFError, KeyError, IndexError) as e:
        return "refuse", str(e)
    if fp.tell() != len(data):
        return "refuse", "trailing bytes"
    return "ok", v


def run_driver(drv, args, blobs):
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for i, b in enumerate(blobs):
            p = os.path.join(d, "%d" % i)
            with open(p, "wb") as f:
                f.write(b)
            paths.append(p)
        out = []
        for k in range(0, len(paths), 500):
            r = subprocess.run([drv] + args + paths[k:k + 500], check=True,
                               capture_output=True, text=True)
            out += r.stdout.splitlines()
    if len(out) != len(blobs):
        sys.exit("diff_check: the driver answered %d of %d inputs" % (len(out), len(blobs)))
    return out


def gen_value(rnd, depth=0):
    k = rnd.randrange(9 if depth < 4 else 5)
    if k == 0:
        return rnd.choice([0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1,
                           rnd.randrange(2**64)])
    if k == 1:
        return -1 - rnd.choice([0, 23, 24, 255, 256, 2**32, 2**63, 2**64 - 1,
                                rnd.randrange(2**64)])
    if k == 2:
        return bytes(rnd.randrange(256) for _ in range(rnd.choice([0, 1, 23, 24, 40])))
    if k == 3:
        return "".join(rnd.choice("ab\u00e9\u3042\U0001F68C") for _ in range(rnd.randrange(30)))
    if k == 4:
        return None
    if k in (5, 6):
        return [gen_value(rnd, depth + 1) for _ in range(rnd.randrange(5))]
    if k == 7:
        return {rnd.randrange(1000): gen_value(rnd, depth + 1) for _ in range(rnd.randrange(5))}
    return cbor2.CBORTag(rnd.choice([18, 24 + 1000, 40000, 2**32 + 7]), gen_value(rnd, depth + 1))


def damaged(rnd, b):
    out = []
    if len(b) > 1:
        out.append(b[:rnd.randrange(1, len(b))])
        c = bytearray(b)
        for _ in range(1 + rnd.randrange(3)):
            c[rnd.randrange(len(c))] = rnd.randrange(256)
        out.append(bytes(c))
        out.append(b + bytes([rnd.randrange(256)]))
    return out


def corpus_files(corpus, targets, max_len):
    blobs = []
    for t in targets:
        d = os.path.join(corpus, t)
        for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            with open(os.path.join(d, name), "rb") as f:
                b = f.read()
            if len(b) <= max_len:
                blobs.append(b)
    return blobs


def cbor_check(drv, corpus, rnd):
    seeds = corpus_files(corpus, ["fuzz_cbor", "fuzz_record", "fuzz_msg"], 65536)
    seeds += [cbor2.dumps(gen_value(rnd)) for _ in range(1500)]
    # heads the reader must refuse or take: reserved additional information, long forms
    seeds += [bytes([m << 5 | ai]) + bytes(9) for m in range(8) for ai in range(24, 32)]
    seeds += [b"\x18\x05", b"\x19\x00\x05", b"\x7f\x61a\xff", b"\x62\xc3\x28", b"\x61\x00"]
    blobs = list(seeds)
    for b in seeds:
        blobs += damaged(rnd, b)
    res = run_driver(drv, ["cbor"], blobs)
    counts = {"same": 0, "unsupported": 0, "skipped": 0}
    bad = []
    for b, line in zip(blobs, res):
        status, val = py_decode(b)
        if line == "unsupported":
            counts["unsupported"] += 1
            continue
        if line == "refuse":
            if status == "ok" and not readable(val):
                counts["unsupported"] += 1      # simple values, floats: refused alike
            elif status == "ok":
                bad.append((b, "the project refuses, cbor2 reads %r" % (val,)))
            else:
                counts["same"] += 1
            continue
        ours = line[3:]
        if status != "ok":
            if "T" in ours and any(("T%d(" % t) in ours for t in SEMANTIC_TAGS):
                counts["skipped"] += 1      # cbor2 reads a meaning into the tag
            else:
                bad.append((b, "the project reads %s, cbor2 refuses (%s)" % (ours, val)))
            continue
        try:
            theirs = fmt(val)
        except Skip:
            counts["skipped"] += 1
            continue
        if theirs != ours:
            if any(("T%d(" % t) in ours for t in SEMANTIC_TAGS) or has_dup_keys(ours, theirs):
                counts["skipped"] += 1
            else:
                bad.append((b, "the project reads %s, cbor2 %s" % (ours, theirs)))
            continue
        counts["same"] += 1
    return len(blobs), counts, bad


def readable(v):
    """Whether v is made only of what the project's reader reads (no simple values, floats,
    booleans or undefined)."""
    try:
        fmt(v)
    except Skip:
        return False
    return True


def has_dup_keys(ours, theirs):
    """Maps print {N|...}: cbor2's dict has fewer pairs than the input when keys repeat."""
    import re
    a = [int(x) for x in re.findall(r"\{(\d+)\|", ours)]
    b = [int(x) for x in re.findall(r"\{(\d+)\|", theirs)]
    return len(a) == len(b) and any(x > y for x, y in zip(a, b))


def sig_structure(protected, payload):
    return cbor2.dumps(["Signature1", protected, b"", payload])


def py_verify(pub, b):
    """True when b is a tagged COSE_Sign1 with alg ES256 whose signature verifies."""
    st, v = py_decode(b)
    if st != "ok" or not isinstance(v, cbor2.CBORTag) or v.tag != 18:
        return False
    a = v.value
    if not isinstance(a, list) or len(a) != 4 or not isinstance(a[0], bytes) or \
       not isinstance(a[1], dict) or not isinstance(a[2], bytes) or not isinstance(a[3], bytes):
        return False
    st, hdr = py_decode(a[0])
    if st != "ok" or not isinstance(hdr, dict) or hdr.get(1) != -7 or len(a[3]) != 64:
        return False
    r, s = int.from_bytes(a[3][:32], "big"), int.from_bytes(a[3][32:], "big")
    try:
        pub.verify(encode_dss_signature(r, s), sig_structure(a[0], a[2]),
                   ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def py_sign(key, payload, kid=b"bus-042", high_s=False):
    protected = cbor2.dumps({1: -7})
    der = key.sign(sig_structure(protected, payload), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    if high_s == (s <= n // 2):
        s = n - s
    sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return cbor2.dumps(cbor2.CBORTag(18, [protected, {4: kid}, payload, sig]), canonical=True)


def cose_check(drv, corpus, rnd):
    cert_path = os.path.join(os.environ["KP_FUZZ_DATA"], "fuzz-cert.pem")
    with open(cert_path, "rb") as f:
        pub = x509.load_pem_x509_certificate(f.read()).public_key()
    with open(os.path.join(os.environ["KP_FUZZ_DATA"], "fuzz-key.pem"), "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    seeds = [b for b in corpus_files(corpus, ["fuzz_record"], 65536) if b[:1] == b"\xd2"]
    for i in range(60):
        payload = cbor2.dumps(gen_value(rnd))
        seeds.append(py_sign(key, payload, high_s=i % 2 == 1))
    blobs = list(seeds)
    for b in seeds:
        blobs += damaged(rnd, b)
        c = bytearray(b)
        c[-1 - rnd.randrange(64)] ^= 1 << rnd.randrange(8)      # in the signature
        blobs.append(bytes(c))
    res = run_driver(drv, ["cose", cert_path], blobs)
    counts = {"valid": 0, "invalid": 0, "stricter": 0}
    bad = []
    for b, line in zip(blobs, res):
        theirs = py_verify(pub, b)
        ours = line == "valid"
        if ours and not theirs:
            bad.append((b, "the project verifies what cryptography refuses"))
        elif theirs and not ours:
            st, v = py_decode(b)
            canonical = st == "ok" and cbor2.dumps(v, canonical=True) == b and \
                isinstance(v.value[1], dict) and set(v.value[1]) == {4} and \
                isinstance(v.value[1][4], bytes) and 0 < len(v.value[1][4]) <= 32
            if canonical:
                bad.append((b, "cryptography verifies, the project refuses"))
            else:
                counts["stricter"] += 1
        else:
            counts["valid" if ours else "invalid"] += 1
    return len(blobs), counts, bad


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: diff_check.py DIFFDRV CORPUS")
    drv, corpus = sys.argv[1], sys.argv[2]
    rnd = random.Random(19)
    failed = False
    for name, check in (("CBOR vs python3-cbor2", cbor_check),
                        ("COSE_Sign1 vs python3-cryptography", cose_check)):
        n, counts, bad = check(drv, corpus, rnd)
        print("diff %-36s %5d inputs: %s, %d disagreements" % (
            name, n, ", ".join("%s %d" % kv for kv in counts.items()), len(bad)))
        for b, why in bad[:10]:
            print("  DIFF %s\n       input %s" % (why, b.hex()))
        failed = failed or bool(bad)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
