#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Running as a service (README, "Running as a service"): kippu-backend and kippu-terminal
# under a stand-in for systemd's notify socket (tests/sys/notify_wait.py) send READY=1,
# WATCHDOG=1 at half the interval while their loop turns, STOPPING=1 after SIGTERM and exit
# 0; databases and their -wal/-shm files are 0600 whatever the umask (000 and 022).
# Prints cmocka-style lines so tests/run.sh counts it. Needs python3 (make deps).
KP_BIN=${KP_BIN:-build/bin}
KP_BIN=$(cd "$KP_BIN" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
T=$(mktemp -d "${TMPDIR:-/tmp}/kippu-service.XXXXXX")
trap 'rm -rf "$T"' EXIT INT TERM
passed=0; failed=0; failures=""
ok()  { passed=$((passed + 1)); echo "[       OK ] $1"; }
bad() { failed=$((failed + 1)); failures="$failures $1"; echo "[  FAILED  ] $1: $2"; }
CTL="$KP_BIN/kippuctl"
notify() { python3 "$HERE/notify_wait.py" "$T" 1000000 "$@" > "$T/notify.out" 2>&1; }
sees() { for w in READY=1 "WATCHDOG=1 x3" STOPPING=1 "exit 0"; do
	grep -q "^$w" "$T/notify.out" || return 1; done; }

echo "[==========] Running 8 test(s)."
cd "$T" || exit 1
"$CTL" ca create --key ca.key --cert ca.crt --cn "Service Test CA" >/dev/null &&
"$CTL" backend create --ca-key ca.key --ca-cert ca.crt --key backend.key --cert backend.crt \
	>/dev/null &&
"$CTL" terminal create --ca-key ca.key --ca-cert ca.crt --id T1 --key T1.key --cert T1.crt \
	>/dev/null &&
"$CTL" token-key create token.key >/dev/null || { echo "setup failed"; exit 1; }
# A terminal that idles in real time: one tap at once, the next an hour later.
cat > idle.txt <<'SC'
start 2026-11-26T08:00:00+09:00
pace real
card alice felica idm=0101020304050607 pmm=100B4B428485D0FF sys=0003,FE00 balance=1500 cardtype=2 region=0
tap +0 alice
tap +3600 alice
SC
cat > t.conf <<'CONF'
terminal_id = T1
operator = OP-A
reader = mock:idle.txt
hmi = mock:hmi.log
database = t.db
key = T1.key
cert = T1.crt
token_key = token.key
CONF

for u in 000 022; do
	rm -f b.db b.db-wal b.db-shm
	if (umask $u; KP_STAT_FILES="b.db b.db-wal b.db-shm" notify "$KP_BIN/kippu-backend" \
	    --listen 127.0.0.1:0 --db b.db --ca ca.crt --cert backend.crt --key backend.key) &&
	   sees; then
		ok "backend_notify_umask_$u"
	else
		bad "backend_notify_umask_$u" "$(cat "$T/notify.out")"
	fi
	m=$(stat -c %a b.db 2>/dev/null)
	[ "$m" = 600 ] && ok "backend_db_0600_umask_$u" || bad "backend_db_0600_umask_$u" "b.db mode $m"
	rm -f t.db t.db-wal t.db-shm
	if (umask $u; KP_STAT_FILES="t.db t.db-wal t.db-shm" notify "$KP_BIN/kippu-terminal" \
	    --config t.conf --offline) && sees; then
		ok "terminal_notify_umask_$u"
	else
		bad "terminal_notify_umask_$u" "$(cat "$T/notify.out")"
	fi
	# the database and, while the terminal ran, its -wal and -shm
	modes=$(grep '^mode ' "$T/notify.out" | tr '\n' ' ')
	if [ "$modes" = "mode t.db 600 mode t.db-wal 600 mode t.db-shm 600 " ] &&
	   [ "$(stat -c %a t.db)" = 600 ]; then
		ok "terminal_db_wal_shm_0600_umask_$u"
	else
		bad "terminal_db_wal_shm_0600_umask_$u" "$modes"
	fi
done

if [ $failed -eq 0 ]; then
	echo "[  PASSED  ] $passed test(s)."
else
	echo "[  PASSED  ] $passed test(s)."
	echo "[  FAILED  ] $failed test(s), listed below:"
	for f in $failures; do echo "[  FAILED  ] $f"; done
	exit 1
fi
