# SPDX-License-Identifier: Apache-2.0
"""Long offline (issue 19): a terminal offline for DAYS simulated days, then one sync.

Generates a mock-reader scenario on the virtual clock (hal/SCENARIO.md, pace virtual):
TAPS taps by CARDS cards spread over each service day (05:00 to 00:30 local, so service
days turn at 04:00 with taps after midnight), and a load file whose passes expire all
through the week (n-ride tickets with staggered ends, 1-day passes used on first tap), a
denylist loaded at the start and cards with nothing. The denylist ages past
denylist_max_age = 24h: its age is the console's to show (from the last sync; the week
runs never synced, so a console would warn from the first day); --offline has no console,
so this run does not look at the warning itself. The real kippu-terminal runs the week
(--offline) while its RSS (VmRSS of /proc/PID/status) and the size of its WAL are sampled; then the real kippu-backend starts,
the terminal syncs once (--sync-once), and:
  - every record is accepted: the backend holds as many records of the terminal as the
    journal has, none twice, and the terminal has nothing left unsent;
  - the chain is intact: kippuctl journal verify passes, PRAGMA integrity_check is ok;
  - nothing charged twice: each n-ride entitlement's rides left = loaded - accepted taps;
  - memory flat: the last quarter's RSS samples stay within RSS_SLACK_KB of the first
    quarter's largest;
  - the WAL stays bounded, sampled during the week (WAL_MAX_MB: the terminal's idle
    checkpoints fold it back; in virtual time, where it never idles, every 64 taps:
    terminal/app/main.c) and during the sync (SYNC_WAL_MAX_KB: a checkpoint after each
    acknowledged batch, terminal/store/syncstore.c; without it the WAL of a 5,000-record
    backlog reached 1 MiB during the sync, of a week's 100,000 over 100 MiB).
Prints the figures: taps/s, RSS samples, WAL max, sync time and records/s.
Usage: longoffline.py BIN_DIR WORK_DIR DAYS TAPS CARDS [SEED]; exit 1 on any failure.
"""
import os
import random
import sqlite3
import subprocess
import sys
import time

BIN, WORK = sys.argv[1], sys.argv[2]
DAYS, TAPS, CARDS = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
SEED = int(sys.argv[6]) if len(sys.argv) > 6 else 19
CTL = os.path.join(BIN, "kippuctl")
# certificates valid both today (the TLS handshakes) and at the scenarios' virtual times,
# whatever today is until 2036: nothing depends on today's date
VALID = ("--not-before", "2026-01-01T00:00:00Z", "--days", "3650")
START = 1803412800          # 2027-02-24T05:00:00+09:00, a service day's first bus
RIDES = 400
RSS_SLACK_KB = int(os.environ.get("KP_OFFLINE_RSS_SLACK_KB", "4096"))
WAL_MAX_MB = int(os.environ.get("KP_OFFLINE_WAL_MAX_MB", "8"))
SYNC_WAL_MAX_KB = int(os.environ.get("KP_OFFLINE_SYNC_WAL_MAX_KB", "512"))
failures = []


def fail(what):
    failures.append(what)
    print("FAILED: " + what, flush=True)


def run(*args):
    p = subprocess.run(args, cwd=WORK, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True)
    if p.returncode != 0:
        sys.exit("step failed: %s: %s" % (" ".join(args), p.stderr.strip()[-400:]))
    return p.stdout


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S+09:00", time.gmtime(t + 9 * 3600))


def idm(i):
    return "0103%012X" % i


def generate(rng):
    """scenario.txt and load.txt; returns the n-ride entitlements {id: card index}."""
    nride = {}
    load = ["operator OP-A Offline Bus", "product PN nride %d OP-A n-ride ticket" % RIDES,
            "product DAY1 period 1 OP-A 1-day pass"]
    for i in range(CARDS):
        kind = i % 10
        card = "felica:" + idm(i)
        if kind < 7:        # n-ride tickets ending all through the week (and after it)
            until = START + (i % (DAYS + 2)) * 86400 + rng.randrange(86400)
            load.append("entitlement %d %s PN %d %s %s"
                        % (i + 1, card, RIDES, iso(START - 86400), iso(until)))
            nride[i + 1] = i
        elif kind < 9:      # a 1-day pass that starts at its first tap
            load.append("entitlement %d %s DAY1 first-use %s %s"
                        % (i + 1, card, iso(START - 86400), iso(START + DAYS * 86400)))
        if i % 97 == 5:
            load.append("denylist %s reported lost" % card)
    with open(os.path.join(WORK, "load.txt"), "w") as f:
        f.write("\n".join(load) + "\n")
    sc = ["start %d" % START, "pace virtual"]
    sc += ["card c%d felica idm=%s" % (i, idm(i)) for i in range(CARDS)]
    per_day = TAPS // DAYS
    for d in range(DAYS):
        n = per_day if d < DAYS - 1 else TAPS - per_day * (DAYS - 1)
        offs = sorted(d * 86400 + rng.uniform(0, 19.5 * 3600) for _ in range(n))
        sc += ["tap +%.3f c%d" % (o, rng.randrange(CARDS)) for o in offs]
    with open(os.path.join(WORK, "scenario.txt"), "w") as f:
        f.write("\n".join(sc) + "\n")
    return nride


def setup():
    os.makedirs(WORK, exist_ok=True)
    run(CTL, "ca", "create", "--key", "ca.key", "--cert", "ca.crt", *VALID)
    run(CTL, "backend", "create", "--ca-key", "ca.key", "--ca-cert", "ca.crt",
        "--key", "backend.key", "--cert", "backend.crt", *VALID)
    run(CTL, "terminal", "create", "--ca-key", "ca.key", "--ca-cert", "ca.crt",
        "--id", "OFF-1", "--key", "t.key", "--cert", "t.crt", *VALID)
    run(CTL, "token-key", "create", "token.key")
    run(CTL, "load", "t.db", "load.txt", "--token-key", "token.key")
    run(CTL, "backend", "operator", "backend.db", "OP-A", "Offline Bus")
    run(CTL, "backend", "terminal", "add", "backend.db", "OFF-1", "--operator", "OP-A")


def write_conf(port):
    with open(os.path.join(WORK, "t.conf"), "w") as f:
        f.write("terminal_id = OFF-1\noperator = OP-A\nroute = R1\nstop = S1\n"
                "reader = mock:scenario.txt\nhmi = mock:hmi.log\ndatabase = t.db\n"
                "key = t.key\ncert = t.crt\ntoken_key = token.key\ndouble_tap_window = 60\n"
                "log = stderr\nevents = json:events.jsonl\ndenylist_max_age = 24h\n"
                "backend = 127.0.0.1:%d\nbackend_ca = ca.crt\nbackend_cert = backend.crt\n"
                % port)


def rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for ln in f:
                if ln.startswith("VmRSS:"):
                    return int(ln.split()[1])
    except OSError:
        pass
    return None


def offline_week():
    """Runs the scenario; returns (seconds, RSS samples in kB, the WAL's largest size)."""
    wal = os.path.join(WORK, "t.db-wal")
    t0 = time.monotonic()
    with open(os.path.join(WORK, "offline.log"), "w") as log:
        p = subprocess.Popen([os.path.join(BIN, "kippu-terminal"), "--config", "t.conf",
                              "--offline"], cwd=WORK, stdout=subprocess.DEVNULL, stderr=log)
        rss, wal_max = [], 0
        while p.poll() is None:
            r = rss_kb(p.pid)
            if r:
                rss.append(r)
            try:
                wal_max = max(wal_max, os.path.getsize(wal))
            except OSError:
                pass
            time.sleep(0.2)
    secs = time.monotonic() - t0
    if p.returncode != 0:
        fail("kippu-terminal --offline exited %d: %s" % (p.returncode, tail("offline.log")))
    return secs, rss, wal_max


def tail(name):
    with open(os.path.join(WORK, name)) as f:
        return f.read().strip()[-400:]


def q(db, sql, args=()):
    c = sqlite3.connect(os.path.join(WORK, db))
    try:
        return c.execute(sql, args).fetchall()
    finally:
        c.close()


def sync_once():
    b = subprocess.Popen([os.path.join(BIN, "kippu-backend"), "--listen", "127.0.0.1:0",
                          "--db", "backend.db", "--ca", "ca.crt", "--cert", "backend.crt",
                          "--key", "backend.key"], cwd=WORK, stdout=subprocess.PIPE,
                         stderr=open(os.path.join(WORK, "backend.log"), "w"), text=True)
    line = b.stdout.readline()
    if "listening on" not in line:
        sys.exit("kippu-backend did not start: %r" % line)
    write_conf(int(line.rsplit(":", 1)[1]))
    t0 = time.monotonic()
    wal_max = 0
    with open(os.path.join(WORK, "sync.log"), "w") as log:
        p = subprocess.Popen([os.path.join(BIN, "kippu-terminal"), "--config", "t.conf",
                              "--sync-once"], cwd=WORK, stdout=subprocess.DEVNULL, stderr=log)
        while p.poll() is None:
            try:
                wal_max = max(wal_max, os.path.getsize(os.path.join(WORK, "t.db-wal")))
            except OSError:
                pass
            time.sleep(0.05)
        rc = p.returncode
    secs = time.monotonic() - t0
    b.terminate()
    b.wait()
    b.stdout.close()
    if rc != 0:
        fail("the sync failed (exit %d): %s" % (rc, tail("sync.log")))
    return secs, wal_max


def main():
    rng = random.Random(SEED)
    os.makedirs(WORK, exist_ok=True)
    nride = generate(rng)
    setup()
    write_conf(1)               # no backend reachable: offline
    if os.environ.get("KP_OFFLINE_SETUP_ONLY"):
        return 0
    secs, rss, wal_max = offline_week()
    n = q("t.db", "SELECT count(*) FROM journal")[0][0]
    if n != TAPS:
        fail("%d taps in the scenario, %d records in the journal" % (TAPS, n))
    res = dict(((r, why), c) for r, why, c in
               q("t.db", "SELECT result, reason, count(*) FROM journal GROUP BY 1, 2"))
    # passes expiring, denylist, service days turning: each seen in the week
    for want in (("refused", "expired"), ("refused", "denylisted"), ("accepted", "ok"),
                 ("refused", "no-entitlement")):
        if res.get(want, 0) == 0:
            fail("no %s/%s record in the week" % want)
    acc = dict(q("t.db", "SELECT token, count(*) FROM journal WHERE result = 'accepted' "
                         "GROUP BY token"))
    for token, left, ent in q("t.db", "SELECT e.token, e.rides_left, e.id FROM "
                                      "entitlements e WHERE e.product_id = 'PN'"):
        if ent in nride and RIDES - left != acc.get(token, 0):
            fail("entitlement %d: %d rides left of %d, %d accepted" % (ent, left, RIDES,
                                                                        acc.get(token, 0)))
    wal_after = os.path.getsize(os.path.join(WORK, "t.db-wal")) \
        if os.path.exists(os.path.join(WORK, "t.db-wal")) else 0
    sync_s, sync_wal = sync_once()
    held = q("backend.db", "SELECT count(*), count(DISTINCT seq) FROM records WHERE "
                           "terminal = 'OFF-1'")[0]
    if held != (n, n):
        fail("the backend holds %d records (%d distinct) of %d journaled" % (held[0],
                                                                            held[1], n))
    acked = dict(q("t.db", "SELECT key, value FROM sync_state"))
    if acked.get("acked_seq") != n:
        fail("%s records acknowledged of %d" % (acked.get("acked_seq"), n))
    p = subprocess.run([CTL, "journal", "verify", "t.db"], cwd=WORK, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        fail("journal verify: " + p.stdout.strip()[-300:])
    for db in ("t.db", "backend.db"):
        if q(db, "PRAGMA integrity_check") != [("ok",)]:
            fail(db + " integrity_check")
    quarter = max(1, len(rss) // 4)
    first, last = rss[:quarter], rss[-quarter:]
    # An AddressSanitizer build (make test SANITIZE=1) keeps freed memory in its quarantine
    # (256 MB) and shadow, so its RSS grows whatever the program does: the plain build's run
    # is the one that checks the RSS stays flat.
    with open(os.path.join(BIN, "kippu-terminal"), "rb") as f:
        asan = b"__asan_init" in f.read()
    if asan:
        print("long offline: RSS not compared (an AddressSanitizer build; the plain build's "
              "run compares it)", flush=True)
    elif rss and max(last) > max(first) + RSS_SLACK_KB:
        fail("RSS grew over the week: first quarter max %d kB, last quarter max %d kB"
             % (max(first), max(last)))
    if wal_max > WAL_MAX_MB << 20:
        fail("the WAL reached %.1f MiB in the week (bound %d MiB)" % (wal_max / 1048576,
                                                                     WAL_MAX_MB))
    if sync_wal > SYNC_WAL_MAX_KB << 10:
        fail("the WAL reached %d KiB in the sync (bound %d KiB)" % (sync_wal >> 10,
                                                                   SYNC_WAL_MAX_KB))
    step = max(1, len(rss) // 8)
    print("long offline: %d days, %d taps by %d cards in %.1f s (%.0f taps/s); results %s; "
          "RSS kB samples (%d, every 0.2 s) %s, max %d; "
          "WAL max %.2f MiB, %.2f MiB at the end, %.2f MiB max during the sync; sync of %d records %.1f s (%.0f "
          "records/s), sync_state %s; %d failures"
          % (DAYS, TAPS, CARDS, secs, TAPS / secs if secs else 0,
             ", ".join("%s/%s %d" % (k[0], k[1], v) for k, v in sorted(res.items())),
             len(rss), rss[::step], max(rss) if rss else 0, wal_max / 1048576,
             wal_after / 1048576, sync_wal / 1048576, n, sync_s, n / sync_s if sync_s else 0, acked,
             len(failures)), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
