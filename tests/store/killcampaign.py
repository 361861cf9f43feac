# SPDX-License-Identifier: Apache-2.0
"""kill -9 campaign (issue 19, "Processes killed at any moment").

The real programs, over loopback: kippu-backend, two kippu-terminal (mock reader, virtual
clock) with disjoint cards. Each point runs one step and sends SIGKILL at a random moment
in it (a random offset within the step's measured length):
  tap     a terminal runs a scenario of taps (--offline); the terminal is killed
  sync    a terminal syncs (--sync-once); the terminal is killed
  apply   the backend's configuration changed first (a card denied or allowed), so the
          sync brings a new bundle; the terminal is killed at any moment of that
          sync, its bundle apply included
  ingest  a terminal with a backlog syncs; the backend is killed
  build   the configuration changed first; the backend is killed while building and
          sending the bundle
Just before the kill the victim is stopped (SIGSTOP) and /proc/locks read: the point is
"inside a write transaction" when the victim holds SQLite's WAL write lock (byte 120 of
the database's -shm; byte 121, a checkpoint, is counted apart). After the kill, before
anything opens the database again, its WAL is read: frames after the last commit frame
(valid salts and checksums) are a transaction torn mid-commit (a hot rollback journal
would count too; the databases run in WAL mode).
Then the program is restarted (the backend) or runs again (the terminal) and these hold:
  - PRAGMA integrity_check is ok on every database;
  - each journal is gapless, and kippuctl journal verify passes for each terminal (every
    KP_KILL_VERIFY_EVERY points, default 10, and at the end);
  - every tap shown accepted on the HMI is in the journal (accepted records >= shown, and
    no more than shown + the kills during taps);
  - nothing charged twice: for each card, rides bought - rides left on its terminal =
    the accepted records of the card in the terminal's journal; on the backend, each
    entitlement's used = the accepted rides its records carry;
  - the backend holds each record at most once, only records the terminals journaled
    (same hash), and after the closing full sync exactly the union of the journals.
Usage: killcampaign.py BIN_DIR WORK_DIR POINTS [SEED]   (SEED also from KP_KILL_SEED)
Prints the seed first, one line per violation, then a summary; exit 1 on any violation.
"""
import os
import random
import signal
import sqlite3
import struct
import subprocess
import sys
import time

BIN, WORK, POINTS = sys.argv[1], sys.argv[2], int(sys.argv[3])
SEED = int(sys.argv[4]) if len(sys.argv) > 4 else int(os.environ.get("KP_KILL_SEED") or
                                                      int.from_bytes(os.urandom(4), "big"))
CTL = os.path.join(BIN, "kippuctl")
# certificates valid both today (the TLS handshakes) and at the scenarios' virtual times,
# whatever today is until 2036: nothing depends on today's date
VALID = ("--not-before", "2026-01-01T00:00:00Z", "--days", "3650")
RIDES = 10000
CARDS = 8                  # per terminal
TAPS = int(os.environ.get("KP_KILL_TAPS", "40"))   # per tap step
VERIFY_EVERY = int(os.environ.get("KP_KILL_VERIFY_EVERY", "10"))
DAY_MS = 86400000
T0_S = 1798761600          # 2027-01-01T00:00:00Z
rng = random.Random(SEED)
violations = []
stats = {"points": 0, "in_txn": 0, "in_ckpt": 0, "torn": 0, "finished_first": 0,
         "verified": 0}
per_kind = {}


def run(*args, check=True):
    p = subprocess.run(args, cwd=WORK, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True)
    if check and p.returncode != 0:
        sys.exit("setup step failed: %s: %s" % (" ".join(args), p.stderr.strip()))
    return p


def idm(term, i):
    return "01%02X0000000000%02X" % (term, i)


def violation(what):
    violations.append(what)
    print("VIOLATION (seed %d, point %d): %s" % (SEED, stats["points"], what), flush=True)


# --- the WAL: frames after the last commit frame ---------------------------------------
def wal_checksum(data, be, s0, s1):
    fmt = (">" if be else "<") + "%dI" % (len(data) // 4)
    words = struct.unpack(fmt, data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def uncommitted_frames(db):
    """Frames in DB-wal past its last valid commit frame (0 if none or no WAL)."""
    if os.path.exists(db + "-journal") and os.path.getsize(db + "-journal") > 0:
        return 1
    try:
        with open(db + "-wal", "rb") as f:
            wal = f.read()
    except FileNotFoundError:
        return 0
    if len(wal) < 32:
        return 0
    magic, _, psz, _, salt1, salt2, c0, c1 = struct.unpack(">8I", wal[:32])
    if magic not in (0x377F0682, 0x377F0683):
        return 0
    be = magic & 1
    s0, s1 = wal_checksum(wal[:24], be, 0, 0)
    if (s0, s1) != (c0, c1):
        return 0
    off, valid, last_commit = 32, 0, 0
    while off + 24 + psz <= len(wal):
        pg, commit, fs1, fs2, fc0, fc1 = struct.unpack(">6I", wal[off:off + 24])
        if (fs1, fs2) != (salt1, salt2) or pg == 0:
            break
        s0, s1 = wal_checksum(wal[off:off + 8], be, s0, s1)
        s0, s1 = wal_checksum(wal[off + 24:off + 24 + psz], be, s0, s1)
        if (s0, s1) != (fc0, fc1):
            break
        valid += 1
        if commit:
            last_commit = valid
        off += 24 + psz
    return valid - last_commit


# --- the fleet -------------------------------------------------------------------------
class Terminal:
    def __init__(self, n):
        self.n, self.id = n, "T%d" % n
        self.db = os.path.join(WORK, "t%d.db" % n)
        self.conf = "t%d.conf" % n
        self.day = 0
        self.shown = 0          # taps shown accepted on the HMI, all runs
        self.tap_kills = 0
        self.tokens = set()     # its own cards' tokens

    def write_conf(self, port):
        with open(os.path.join(WORK, self.conf), "w") as f:
            f.write("terminal_id = %s\noperator = OP-A\nroute = R1\nstop = S%d\n"
                    "reader = mock:s%d.txt\nhmi = mock:hmi%d.log\ndatabase = t%d.db\n"
                    "key = t%d.key\ncert = t%d.crt\ntoken_key = token.key\n"
                    "double_tap_window = 60\nlog = stderr\nbackend = 127.0.0.1:%d\n"
                    "backend_ca = ca.crt\nbackend_cert = backend.crt\n"
                    "sync_timeout_ms = 5000\n"
                    % ((self.id,) + (self.n,) * 6 + (port,)))

    def scenario(self):
        """A new service day of TAPS taps, every card in turn, 61 s apart."""
        self.day += 1
        lines = ["start %d" % (T0_S + self.day * 86400), "pace virtual"]
        lines += ["card c%d felica idm=%s" % (i, idm(self.n, i)) for i in range(CARDS)]
        lines += ["tap +%d c%d" % (61 * (k // CARDS) + k % CARDS, k % CARDS)
                  for k in range(TAPS)]
        with open(os.path.join(WORK, "s%d.txt" % self.n), "w") as f:
            f.write("\n".join(lines) + "\n")

    def count_shown(self):
        try:
            with open(os.path.join(WORK, "hmi%d.log" % self.n)) as f:
                n = sum(1 for ln in f if ln.startswith("show ") and " accepted " in ln)
            os.unlink(os.path.join(WORK, "hmi%d.log" % self.n))
        except FileNotFoundError:
            n = 0
        self.shown += n

    def argv(self, what):
        return [os.path.join(BIN, "kippu-terminal"), "--config", self.conf, what]


class Backend:
    def __init__(self):
        self.db = os.path.join(WORK, "backend.db")
        self.proc, self.port = None, 0

    def start(self):
        self.proc = subprocess.Popen(
            [os.path.join(BIN, "kippu-backend"), "--listen", "127.0.0.1:%d" % self.port,
             "--db", "backend.db", "--ca", "ca.crt", "--cert", "backend.crt", "--key",
             "backend.key", "--timeout-ms", "5000"],
            cwd=WORK, stdout=subprocess.PIPE, stderr=open(os.path.join(WORK, "b.log"), "a"),
            text=True)
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            sys.exit("kippu-backend did not start: %r" % line)
        self.port = int(line.rsplit(":", 1)[1])

    def kill(self):
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        self.proc.stdout.close()


def setup():
    os.makedirs(WORK, exist_ok=True)
    run(CTL, "ca", "create", "--key", "ca.key", "--cert", "ca.crt", *VALID)
    run(CTL, "backend", "create", "--ca-key", "ca.key", "--ca-cert", "ca.crt",
        "--key", "backend.key", "--cert", "backend.crt", *VALID)
    run(CTL, "token-key", "create", "token.key")
    run(CTL, "backend", "operator", "backend.db", "OP-A", "Bus A")
    run(CTL, "backend", "product", "backend.db", "P", str(RIDES), "OP-A", "many rides")
    terms = [Terminal(1), Terminal(2)]
    for t in terms:
        run(CTL, "terminal", "create", "--ca-key", "ca.key", "--ca-cert", "ca.crt",
            "--id", t.id, "--key", "t%d.key" % t.n, "--cert", "t%d.crt" % t.n, *VALID)
        run(CTL, "backend", "terminal", "add", "backend.db", t.id, "--operator", "OP-A")
        for i in range(CARDS):
            card = "felica:" + idm(t.n, i)
            tok = run(CTL, "token", "--token-key", "token.key", card).stdout.split()[-1]
            t.tokens.add(bytes.fromhex(tok))
            run(CTL, "backend", "card", "backend.db", card, "--token-key", "token.key")
            run(CTL, "backend", "sell", "backend.db", card, "P", "2026-01-01T00:00:00Z",
                "2030-01-01T00:00:00Z", "--token-key", "token.key")
    for i in range(CARDS):      # cards never tapped: denied and allowed for new bundles
        run(CTL, "backend", "card", "backend.db", "felica:" + idm(9, i), "--token-key",
            "token.key")
    return terms


# --- the invariants --------------------------------------------------------------------
def q(db, sql, args=()):
    c = sqlite3.connect(db)
    try:
        return c.execute(sql, args).fetchall()
    finally:
        c.close()


def check_terminal(t, verify):
    """The terminal's invariants; the journal's signatures and chain (kippuctl journal
    verify, whose cost grows with the journal) when verify is set: records are immutable,
    so damage done at any point is still there for the next verify to find."""
    if not os.path.exists(t.db):
        return
    ok = q(t.db, "PRAGMA integrity_check")
    if ok != [("ok",)]:
        violation("%s integrity_check: %s" % (t.id, ok[:3]))
    n, lo, hi = q(t.db, "SELECT count(*), min(seq), max(seq) FROM journal")[0]
    if n and (lo != 1 or hi != n):
        violation("%s: the journal has gaps (%d records, seq %d to %d)" % (t.id, n, lo, hi))
    if verify:
        p = run(CTL, "journal", "verify", t.db, check=False)
        stats["verified"] += 1
        if p.returncode != 0:
            violation("%s journal verify: %s" % (t.id, (p.stdout + p.stderr).strip()[-300:]))
    acc = q(t.db, "SELECT count(*) FROM journal WHERE result = 'accepted'")[0][0]
    if acc < t.shown or acc > t.shown + t.tap_kills:
        violation("%s: %d accepted in the journal, %d shown accepted, %d kills in taps"
                  % (t.id, acc, t.shown, t.tap_kills))
    used = dict(q(t.db, "SELECT token, count(*) FROM journal WHERE result = 'accepted' "
                        "GROUP BY token"))
    for token, left in q(t.db, "SELECT token, rides_left FROM entitlements"):
        if token not in t.tokens:
            continue
        if RIDES - left != used.get(token, 0):
            violation("%s: a card has %d rides left of %d, %d accepted in the journal"
                      % (t.id, left, RIDES, used.get(token, 0)))


def check_backend(terms, full):
    db = os.path.join(WORK, "backend.db")
    ok = q(db, "PRAGMA integrity_check")
    if ok != [("ok",)]:
        violation("backend integrity_check: %s" % ok[:3])
    dup = q(db, "SELECT terminal, seq, count(*) FROM records GROUP BY terminal, seq "
                "HAVING count(*) > 1")
    if dup:
        violation("backend holds records twice: %s" % dup[:3])
    for t in terms:
        held = dict(q(db, "SELECT seq, hash FROM records WHERE terminal = ?", (t.id,)))
        if not os.path.exists(t.db):
            continue
        jour = dict(q(t.db, "SELECT seq, hash FROM journal"))
        extra = [s for s in held if jour.get(s) != held[s]]
        if extra:
            violation("backend holds %d records of %s its journal has not (seq %s)"
                      % (len(extra), t.id, extra[:3]))
        if full and len(held) != len(jour):
            violation("after a full sync the backend holds %d records of %s, the journal %d"
                      % (len(held), t.id, len(jour)))
    bad = q(db, "SELECT e.id, e.used, (SELECT coalesce(sum(r.rides), 0) FROM records r "
                "WHERE r.ent_id = e.id AND r.result = 'accepted') AS u FROM entitlements e "
                "WHERE e.used <> u")
    if bad:
        violation("backend entitlements used <> accepted rides (id, used, rides): %s"
                  % bad[:3])


# --- the steps -------------------------------------------------------------------------
durations = {}


def timed(argv):
    t = time.monotonic()
    with open(os.path.join(WORK, "steps.log"), "a") as log:
        subprocess.run(argv, cwd=WORK, stdout=subprocess.DEVNULL, stderr=log)
    return time.monotonic() - t


def held_locks(pid, db):
    """The SQLite WAL locks (bytes of DB-shm) pid holds: 120 write, 121 checkpoint."""
    try:
        ino = os.stat(db + "-shm").st_ino
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return set()
    held = set()
    for ln in lines:
        w = ln.split()
        if "->" in w or len(w) < 8 or w[1] != "POSIX" or w[4] != str(pid):
            continue
        if int(w[5].rsplit(":", 1)[1]) != ino:
            continue
        end = int(w[7]) if w[7] != "EOF" else 1 << 30
        held.update(b for b in (120, 121) if int(w[6]) <= b <= end)
    return held


def kill_at(argv, victim_is_backend, backend, db, kind):
    """Run argv; at a random moment within the step stop its victim (the step itself or
    the backend), note the database locks it holds, kill it with SIGKILL."""
    delay = rng.uniform(0.0, durations[kind])
    p = subprocess.Popen(argv, cwd=WORK, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    time.sleep(delay)
    victim = backend.proc if victim_is_backend else p
    if p.poll() is not None:            # the step ended first: no point
        stats["finished_first"] += 1
        return False
    os.kill(victim.pid, signal.SIGSTOP)
    locks = held_locks(victim.pid, db)
    victim.kill()
    victim.wait()
    p.wait(timeout=60)
    stats["points"] += 1
    k = per_kind.setdefault(kind, [0, 0, 0])
    k[0] += 1
    if 120 in locks:
        stats["in_txn"] += 1
        k[1] += 1
    elif 121 in locks:
        stats["in_ckpt"] += 1
    if uncommitted_frames(db):
        stats["torn"] += 1
        k[2] += 1
    if victim_is_backend:
        backend.proc.stdout.close()
        backend.start()
        for t in terms_g:
            t.write_conf(backend.port)
    return True


terms_g = None


def change_config(n):
    """A new bundle: deny or allow back a card no terminal taps (the idm(9, i) cards)."""
    card = "felica:" + idm(9, n % CARDS)
    if n // CARDS % 2 == 0:
        run(CTL, "backend", "deny", "backend.db", card, "kill campaign", "--token-key",
            "token.key", check=False)
    else:
        run(CTL, "backend", "undeny", "backend.db", card, "--token-key", "token.key",
            check=False)


def main():
    global terms_g
    print("kill campaign seed %d (KP_KILL_SEED=%d to replay), %d points"
          % (SEED, SEED, POINTS), flush=True)
    terms = setup()
    terms_g = terms
    backend = Backend()
    backend.start()
    for t in terms:
        t.write_conf(backend.port)
        # the first sync brings the bundle: the cards' entitlements
        if timed(t.argv("--sync-once")) <= 0 or not os.path.exists(t.db):
            sys.exit("the first sync of %s made no database" % t.id)
    # calibrate: each step's length unkilled
    t = terms[0]
    t.scenario()
    durations["tap"] = timed(t.argv("--offline"))
    t.count_shown()
    t.scenario()
    timed(t.argv("--offline"))
    t.count_shown()
    durations["ingest"] = durations["sync"] = timed(t.argv("--sync-once"))
    change_config(0)
    durations["build"] = durations["apply"] = timed(t.argv("--sync-once"))
    kinds = ["tap", "tap", "sync", "apply", "ingest", "build"]
    n = 1
    tries = reported = 0
    while stats["points"] < POINTS and tries < POINTS * 4:
        tries += 1
        kind = rng.choice(kinds)
        t = rng.choice(terms)
        if kind == "tap":
            t.scenario()
            if kill_at(t.argv("--offline"), False, backend, t.db, kind):
                t.tap_kills += 1
            t.count_shown()
        else:
            if kind in ("ingest", "build") or rng.random() < 0.5:
                t.scenario()            # a backlog to send
                timed(t.argv("--offline"))
                t.count_shown()
            if kind in ("apply", "build"):
                n += 1
                change_config(n)
            if kind in ("ingest", "build"):
                kill_at(t.argv("--sync-once"), True, backend, backend.db, kind)
            else:
                kill_at(t.argv("--sync-once"), False, backend, t.db, kind)
        for x in terms:
            check_terminal(x, stats["points"] % VERIFY_EVERY == 0)
        check_backend(terms, False)
        if violations and len(violations) > 20:
            break
        if stats["points"] % 100 == 0 and stats["points"] != reported:
            reported = stats["points"]
            print("... %d points, %d inside a transaction, %d violations" %
                  (reported, stats["in_txn"], len(violations)), flush=True)
    # the closing sync: everything the terminals journaled reaches the backend once
    for t in terms:
        timed(t.argv("--sync-once"))
    for t in terms:
        check_terminal(t, True)
    check_backend(terms, True)
    backend.stop()
    recs = sum(q(t.db, "SELECT count(*) FROM journal")[0][0] for t in terms)
    print("kill campaign: %d points (%s); %d inside a write transaction (the WAL write "
          "lock held), %d more inside a checkpoint, %d left uncommitted WAL frames; %d "
          "steps ended before their kill; %d records journaled, %d journal verifies; "
          "%d violations" % (stats["points"],
                             ", ".join("%s %d, %d in txn" % (k, v[0], v[1])
                                       for k, v in sorted(per_kind.items())),
                             stats["in_txn"], stats["in_ckpt"], stats["torn"],
                             stats["finished_first"], recs, stats["verified"],
                             len(violations)), flush=True)
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
