#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Terminals fail over between backend addresses (README, "Configuration", `backend`): the
# real kippu-terminal against the real kippu-backend over loopback. The first address a
# closed port, the second the backend: the terminal syncs there; then the reverse order; a
# listener that never speaks TLS (a deadline) is passed over too; an answer of a backend
# (a terminal it does not register) is not a reason to try another address; every address
# unreachable is said so; a bad address in --backend is named. Waits poll with a deadline;
# no fixed sleeps. Prints cmocka-style lines so tests/run.sh counts it.
KP_BIN=${KP_BIN:-build/bin}
case "$KP_BIN" in /*) ;; *) KP_BIN=$(pwd)/$KP_BIN ;; esac
HERE=$(cd "$(dirname "$0")/.." && pwd)
TOOLS="$HERE/../tools"
T=$(mktemp -d "${TMPDIR:-/tmp}/kippu-failover.XXXXXX")
WAIT=60
. "$(dirname "$0")/../shtest.sh"    # ok, bad, finish (the lines run.sh counts)
PIDS=""
cleanup() {
	for p in $PIDS; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
# check NAME WHAT COMMAND...: one test case, named; WHAT says what failed.
check() { n=$1; w=$2; shift 2; if "$@" > "$T/check.out" 2>&1; then ok "$n"; else bad "$n" "$w: $(tail -n 2 "$T/check.out")"; fi; }
# backend NAME DB: a kippu-backend on a free port of 127.0.0.1; its port in $PORT
backend() {
	"$KP_BIN/kippu-backend" --listen 127.0.0.1:0 --db "$2" --ca ca.crt --cert backend.crt \
		--key backend.key --timeout-ms 5000 > "$1.out" 2> "$1.log" &
	PIDS="$PIDS $!"
	wait_line "$1.out" 'listening on' || { bad "$1_start" "$(cat "$1.log")"; finish failover; }
	PORT=$(sed -n 's/^kippu-backend: listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$1.out")
}
# sync LIST [TIMEOUT_MS]: one --sync-once with backend = LIST; its log in sync.log, exit in $rc
sync() {
	sed -e "s/^backend = .*/backend = $1/" -e "s/^sync_timeout_ms = .*/sync_timeout_ms = ${2:-3000}/" \
		terminal.conf > t.conf
	"$KP_BIN/kippu-terminal" --config t.conf --sync-once 2> sync.log
	rc=$?
}
held() { "$KP_BIN/kippuctl" backend records backend.db --csv | tail -n +2 | wc -l; }

cd "$T" || exit 1
CTL="$KP_BIN/kippuctl"
{
	demo_fleet "$CTL" "$TOOLS" backend.db &&
	printf 'backend = x:1\nbackend_ca = ca.crt\nbackend_cert = backend.crt\nsync_timeout_ms = 3000\n' \
		>> terminal.conf &&
	"$CTL" backend operator other.db OP-A "Bus A" &&
	"$KP_BIN/kippu-terminal" --config terminal.conf --offline
} > setup.log 2>&1 || { cat setup.log; echo "[  FAILED  ] 1 test(s), listed below:"; exit 1; }

backend good backend.db
GOOD=127.0.0.1:$PORT
backend other other.db           # the terminal is not registered there
OTHER=127.0.0.1:$PORT
# a port nobody listens on, and one that accepts and never answers
ports=$(python3 -c "import socket
s = [socket.socket() for _ in range(3)]
for x in s: x.bind(('127.0.0.1', 0))
print(' '.join(str(x.getsockname()[1]) for x in s))")
CLOSED=127.0.0.1:$(echo "$ports" | cut -d' ' -f1)
CLOSED2=127.0.0.1:$(echo "$ports" | cut -d' ' -f2)
python3 -c "import socket, time
s = socket.socket(); s.bind(('127.0.0.1', $(echo "$ports" | cut -d' ' -f3))); s.listen(8)
open('silent.up', 'w').write('up'); time.sleep(120)" &
PIDS="$PIDS $!"
SILENT=127.0.0.1:$(echo "$ports" | cut -d' ' -f3)
wait_line silent.up up
check silent_up "no silent listener" test -e silent.up

# the first address closed, the second the backend: synced there, the step logged
sync "$CLOSED, $GOOD"
check closed_first_syncs "exit $rc: $(tail -n 2 sync.log)" test $rc = 0
check closed_first_logged "log" grep -q "connect $CLOSED: .*; trying backend $GOOD" sync.log
check closed_first_with "log" grep -q "sync: with backend $GOOD\$" sync.log
check closed_first_held "records held: $(held)" test "$(held)" -gt 0
before=$(held)
# another tap, then the reverse order: the backend first, nothing else tried
"$KP_BIN/kippu-terminal" --config terminal.conf --offline > /dev/null 2>&1
sync "$GOOD,$CLOSED"
check good_first_syncs "exit $rc: $(tail -n 2 sync.log)" test $rc = 0
check good_first_no_step "log" sh -c "! grep -q 'trying backend' sync.log"
check good_first_with "log" grep -q "sync: with backend $GOOD\$" sync.log
check good_first_held "records held: $(held), before $before" test "$(held)" -gt "$before"
# a listener that never speaks TLS: its deadline, then the next address
sync "$SILENT, $GOOD" 1000
check silent_passed_over "exit $rc: $(tail -n 2 sync.log)" test $rc = 0
check silent_logged "log" grep -q "TLS with $SILENT: .*; trying backend $GOOD" sync.log
# a backend that answers (this terminal is not registered there): no other address tried
sync "$OTHER, $GOOD"
check answer_not_failover "exit $rc: $(tail -n 2 sync.log)" test $rc = 1
check answer_logged "log" grep -q "not registered at this backend" sync.log
check answer_no_step "log" sh -c "! grep -q 'trying backend' sync.log && \
	grep -q 'sync: with backend $OTHER (it answered; no other address is tried)' sync.log"
# none reachable
sync "$CLOSED, $CLOSED2"
check none_reachable "exit $rc" test $rc = 1
check none_logged "log" grep -q "none of the 2 backend addresses could be reached; the last: connect $CLOSED2" sync.log
# --backend takes the same list; a bad address is named, nothing runs
"$KP_BIN/kippu-terminal" --config terminal.conf --backend "$GOOD, nohost" --sync-once 2> bad.log
rc=$?
check option_bad_named "exit $rc: $(cat bad.log)" sh -c "test $rc = 2 && \
	grep -q \"backend: 'nohost' is not HOST:PORT\" bad.log"
"$KP_BIN/kippu-terminal" --config terminal.conf --backend "$CLOSED,$GOOD" --sync-once 2> opt.log
check option_list_syncs "exit $?: $(tail -n 2 opt.log)" grep -q "sync: with backend $GOOD\$" opt.log
finish failover
