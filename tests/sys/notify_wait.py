#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Plays systemd's side of sd_notify for one program: binds an AF_UNIX datagram socket,
starts the program with NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID (its own pid) set,
and waits, each with a deadline, for READY=1, then for three WATCHDOG=1 no further apart than
the interval, then sends SIGTERM and waits for STOPPING=1 and exit status 0.
Usage: notify_wait.py DIR WATCHDOG_USEC PROGRAM [ARGS...] (WATCHDOG_USEC 0: no watchdog); prints what it saw, exit 0 when
all of it came, 1 otherwise."""
import os
import signal
import socket
import subprocess
import sys
import time


def main():
    tmp, usec, cmd = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    path = os.path.join(tmp, "notify-%d.sock" % os.getpid())
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    env = dict(os.environ, NOTIFY_SOCKET=path)
    if usec > 0:                       # 0: no watchdog asked for (none awaited)
        env["WATCHDOG_USEC"] = str(usec)
    # WATCHDOG_PID must be the program's own pid: a shell sets it, then execs the program.
    proc = subprocess.Popen(["sh", "-c", 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$@"',
                             "sh"] + cmd, env=env, stdout=subprocess.DEVNULL)
    seen = []

    def wait_for(word, deadline):
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                msg = sock.recv(4096).decode()
            except socket.timeout:
                break
            now = time.monotonic()
            for line in msg.split("\n"):
                seen.append((now, line))
            if word in msg.split("\n"):
                return now
        return None

    ok = True
    if wait_for("READY=1", time.monotonic() + 20) is None:
        print("no READY=1 within 20 s; saw %r" % [l for _, l in seen])
        ok = False
    elif usec == 0:
        print("READY=1")
    else:
        print("READY=1")
        pings = []
        deadline = time.monotonic() + 4 * usec / 1e6 + 2
        while len(pings) < 3:
            t = wait_for("WATCHDOG=1", deadline)
            if t is None:
                break
            pings.append(t)
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        if len(pings) < 3 or any(g >= usec / 1e6 for g in gaps):
            print("watchdog: %d WATCHDOG=1, gaps %r s, interval %.3f s" %
                  (len(pings), gaps, usec / 1e6))
            ok = False
        else:
            print("WATCHDOG=1 x3, gaps below the interval")
    # While the program runs: the modes of the files named in KP_STAT_FILES that exist.
    for f in os.environ.get("KP_STAT_FILES", "").split():
        if os.path.exists(f):
            print("mode %s %o" % (f, os.stat(f).st_mode & 0o777))
    proc.send_signal(signal.SIGTERM)
    if wait_for("STOPPING=1", time.monotonic() + 20) is None:
        print("no STOPPING=1 after SIGTERM")
        ok = False
    else:
        print("STOPPING=1")
    try:
        rc = proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = "none (killed)"
    if rc != 0:
        print("exit status %s, not 0" % rc)
        ok = False
    else:
        print("exit 0")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
