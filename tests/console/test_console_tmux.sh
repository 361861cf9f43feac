#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The driver console as a driver uses it: kippu-terminal --console runs inside tmux on mock
# scenarios (tests/data/console/), keys go in with send-keys, and what the driver sees comes back
# with capture-pane. Also: the event stream against the journal, validation-only mode
# without colour, a resize, bad keys, bad settings and an unwritable events path.
# Prints cmocka-style lines so tests/run.sh counts it. Needs tmux, python3 (make deps).
KP_BIN=${KP_BIN:-build/bin}
case "$KP_BIN" in /*) ;; *) KP_BIN=$(pwd)/$KP_BIN ;; esac
HERE=$(cd "$(dirname "$0")/.." && pwd)
SRC="$HERE/data/console"
T=$(mktemp -d "${TMPDIR:-/tmp}/kippu-console.XXXXXX")
# Every wait (for a screen text, an exit) gives up after this many seconds: generous, since
# a loaded machine is slow and only a broken console waits it out.
WAIT=60
. "$(dirname "$0")/../shtest.sh"    # ok, bad, finish (the lines run.sh counts)

# Each session has a tmux server of its own (socket $T/NAME.sock, no config file,
# exit-empty off), so a server that exits takes its own test with it and no other.
tm() { n=$1; shift; tmux -f /dev/null -S "$T/$n.sock" "$@"; }
keys() { n=$1; shift; tm "$n" send-keys -t "$n" "$@" 2>/dev/null; }
alive() { tm "$1" has-session -t "$1" 2>/dev/null; }

cleanup() {
	for s in "$T"/*.sock; do [ -S "$s" ] && tmux -S "$s" kill-server >/dev/null 2>&1; done
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

now() { date +%s; }

# start NAME DIR ARGS...: kippu-terminal in a new 80x24 tmux session, in DIR, on a server of
# its own; a server that fails to start (tmux: "server exited unexpectedly") is started
# again, up to three times, and named if it never comes up.
start() {
	name=$1; dir=$2; shift 2
	: > "$dir/exit.$name"
	for try in 1 2 3; do
		tm "$name" new-session -d -s "$name" -x 80 -y 24 \
			"cd '$dir' && env LANG=\${KP_LANG:-C.UTF-8} LC_ALL=\${KP_LANG:-C.UTF-8} TERM=\${KP_TERM:-screen-256color} \
			 '$KP_BIN/kippu-terminal' --config \${KP_CONF:-terminal.conf} --console $* \
			 2>stderr.$name; echo \$? > exit.$name; exec sleep 600" \; \
			set-option -g exit-empty off 2> "$T/tmux-$name.err" && return 0
		alive "$name" && return 0      # the session is there; only the option failed
		echo "    tmux server for $name did not start (try $try): $(cat "$T/tmux-$name.err")"
		tm "$name" kill-server >/dev/null 2>&1; rm -f "$T/$name.sock"
	done
	return 1
}
# screen NAME: what is on NAME's screen; fails if its server is gone.
screen() { tm "$1" capture-pane -p -t "$1" 2>/dev/null; }
# shows NAME TEXT...: every TEXT on NAME's screen at once, within $WAIT s; else the first
# one missing is in $missing. Gives up at once when NAME's tmux server is gone.
shows() {
	n=$1; shift
	end=$(($(now) + WAIT))
	while :; do
		missing=$1
		screen "$n" > "$T/screen.$n" || { alive "$n" || return 1; }
		missing=""
		for s in "$@"; do grep -qF -- "$s" "$T/screen.$n" || { missing=$s; break; }; done
		[ -z "$missing" ] && return 0
		[ "$(now)" -lt "$end" ] || return 1
		sleep 0.1
	done
}
# row_shows NAME ROW TEXT: TEXT on row ROW of NAME's screen, within $WAIT s.
row_shows() {
	end=$(($(now) + WAIT))
	until screen "$1" > "$T/screen.$1" && sed -n "$2p" "$T/screen.$1" | grep -qF -- "$3"; do
		[ "$(now)" -lt "$end" ] && alive "$1" || return 1
		sleep 0.1
	done
}
wait_for() { shows "$@"; }
# not_on_screen TEST NAME: says why the text in $missing is not on NAME's screen.
not_on_screen() {
	if alive "$2"; then
		bad "$1" "'$missing' not on the screen:"; sed 's/^/    | /' "$T/screen.$2"
	else
		bad "$1" "'$missing' not on the screen: the tmux server of $2 is gone"
	fi
}
# expect TEST NAME TEXT...: every TEXT is on the screen (waiting for them).
expect() {
	test=$1; name=$2; shift 2
	if shows "$name" "$@"; then ok "$test"; else not_on_screen "$test" "$name"; return 1; fi
}
# quit NAME DIR: Q, y; waits for the exit status, which must be 0. An open overlay
# ("any key closes") is closed by a first q.
quit() {
	alive "$1" || { echo "    the tmux server of $1 is gone"; return 1; }
	if screen "$1" > "$T/screen.$1" && grep -qF "any key closes" "$T/screen.$1"; then
		keys "$1" q
		end=$(($(now) + WAIT))
		while screen "$1" > "$T/screen.$1" && grep -qF "any key closes" "$T/screen.$1" &&
		      [ "$(now)" -lt "$end" ]; do
			sleep 0.1
		done
	fi
	keys "$1" q
	shows "$1" "(y/n)" && keys "$1" y
	end=$(($(now) + WAIT))
	while [ ! -s "$2/exit.$1" ] && [ "$(now)" -lt "$end" ] && alive "$1"; do sleep 0.1; done
	rc=$(cat "$2/exit.$1" 2>/dev/null)
	screen "$1" > "$2/after.$1" || echo "    the tmux server of $1 is gone"
	tm "$1" kill-server >/dev/null 2>&1
	[ "$rc" = 0 ] || { echo "    $1 exited with '${rc:-nothing}'"; cat "$2/stderr.$1"; return 1; }
}

setup() {
	d=$1
	mkdir -p "$d" && cp "$SRC"/* "$d"/ && cd "$d" || exit 1
	"$KP_BIN/kippuctl" ca create --key ca.key --cert ca.crt >/dev/null &&
	"$KP_BIN/kippuctl" terminal create --ca-key ca.key --ca-cert ca.crt --id BUS-OPA-0042 \
		--key terminal.key --cert terminal.crt >/dev/null &&
	"$KP_BIN/kippuctl" token-key create token.key >/dev/null &&
	"$KP_BIN/kippuctl" load terminal.db load.txt --token-key token.key >/dev/null
	rc=$?
	cd - >/dev/null
	return $rc
}

# Every journaled record appears exactly once in the event stream, in order, and no
# card's IDm does.
events_match() {
	python3 - "$1/events.jsonl" "$1/journal.txt" <<'EOF'
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8")]
seqs = [e["seq"] for e in ev if "seq" in e]
journal = [int(l.split()[0]) for l in open(sys.argv[2]) if l.strip()]
text = open(sys.argv[1], encoding="utf-8").read().upper()
idms = ["0101020304050607", "01010203040506C0", "01010203040506F0", "01010203040506D0", "A1B2C3D4"]
if not seqs:
    sys.exit("no journaled record in the event stream")
if seqs != journal:
    sys.exit("events %s != journal %s" % (seqs, journal))
if any(i in text for i in idms):
    sys.exit("a card id is in the event stream")
for e in ev:
    for k in ("type", "time", "time_ms"):
        if k not in e:
            sys.exit("event without %s: %s" % (k, e))
EOF
}

command -v tmux >/dev/null || { echo "tmux missing (make deps)"; echo "[  FAILED  ] 1 test(s), listed below:"; exit 1; }
echo "[==========] Running the driver console in tmux ($T)"
A="$T/a"
setup "$A" || { bad setup "kippuctl failed"; }

# 1. Shift start, on a scenario without taps (the console stays up after the last tap).
start s1 "$A" --reader mock:no-taps.txt --events json:events.jsonl
if wait_for s1 "乗務前 no shift"; then
	keys s1 s; keys s1 D042; keys s1 Enter
	expect shift_start s1 "SHIFT STARTED" "運転士 D042" "乗務開始 D042"
else
	bad shift_start "the console did not come up"; screen s1; cat "$A/stderr.s1"
fi
quit s1 "$A" || bad shift_start_quit "bad exit"

# 2. An accepted pass, at 80x24.
start s2 "$A" --reader mock:one-alice.txt --events json:events.jsonl
expect accepted_pass s2 "ACCEPTED" "乗車できます" "P10" "残り 2 回 rides" "First validation on this trip" \
	"Reader online"
[ "$(tm s2 display -p -t s2 '#{window_width}x#{window_height}')" = 80x24 ] && ok size_80x24 ||
	bad size_80x24 "window is not 80x24"
quit s2 "$A" || bad accepted_quit "bad exit"

# 3. A denylisted card.
start s3 "$A" --reader mock:one-dave.txt --events json:events.jsonl
expect refused_denylisted s3 "REFUSED" "このカードは使えません（係員へ）" "Card blocked: please see staff"
screen s3 > "$T/denylisted-80x24.txt"
quit s3 "$A" || bad refused_quit "bad exit"

# 4. A child on a child-only ticket.
start s4 "$A" --reader mock:one-kenta.txt --events json:events.jsonl
expect child_fare s4 "ACCEPTED" "KIDS" "小児 (child)" "残り 3 回"
screen s4 > "$T/child-80x24.txt"
quit s4 "$A" || bad child_quit "bad exit"

# 5. No ticket: the driver lets the rider on with a paper pass (O, 2).
start s5 "$A" --reader mock:one-erin.txt --events json:events.jsonl
if expect no_ticket s5 "REFUSED" "No ticket on this card"; then
	keys s5 o
	wait_for s5 "2 paper-pass" || bad override "no override menu"
	keys s5 2
	expect override s5 "運転士判断：紙の乗車券" "Driver override: paper pass shown" \
		"override-paper-pass (record" "driver D042"
fi
quit s5 "$A" || bad override_quit "bad exit"

# 6. The same card again on this trip; a bad key; the console goes on.
start s6 "$A" --reader mock:one-alice-again.txt --events json:events.jsonl
expect already s6 "ALREADY VALIDATED" "Already validated on this trip at"
keys s6 x
expect bad_key s6 "Unknown key 'x'" "ALREADY VALIDATED"

# 7. Resize: bigger, then back to 80x24; the status line follows the bottom row.
tm s6 resize-window -t s6 -x 120 -y 40 2>/dev/null
if row_shows s6 40 'Reader online'; then ok resize_bigger; else
	bad resize_bigger "status line not on row 40"; screen s6 | tail -3; fi
tm s6 resize-window -t s6 -x 80 -y 24 2>/dev/null
if row_shows s6 24 'Reader online' && shows s6 "ALREADY VALIDATED"; then ok resize_back; else
	bad resize_back "status line not on row 24"; screen s6; fi
quit s6 "$A" || bad already_quit "bad exit"

# 8. Confirm mode: the card is shown, B charges it.
start s7 "$A" --reader mock:one-kenta-later.txt --console-mode confirm --events json:events.jsonl
expect confirm_wait s7 "WAITING FOR DRIVER" "B board / R refuse" "KIDS: 3 rides"
keys s7 b
expect confirm_board s7 "ACCEPTED" "KIDS" "残り 2 回" "Boarded: record"
quit s7 "$A" || bad confirm_quit "bad exit"

# 9. Validation only, on a terminal without colours: nothing is journaled.
"$KP_BIN/kippuctl" journal list "$A/terminal.db" > "$A/before.txt"; listed=$?
KP_TERM=vt100 start s8 "$A" --reader mock:one-alice-later.txt --console-mode validate \
	--events json:events.jsonl
expect validate_no_colour s8 "CARD CONTENTS" "P10: 2 rides" "blocked" "validate only"
quit s8 "$A" || bad validate_quit "bad exit"
"$KP_BIN/kippuctl" journal list "$A/terminal.db" > "$A/after.txt" || listed=1
if [ $listed != 0 ]; then
	bad validate_no_charge "journal list failed"
elif cmp -s "$A/before.txt" "$A/after.txt"; then ok validate_no_charge; else
	bad validate_no_charge "$(wc -l < "$A/before.txt") -> $(wc -l < "$A/after.txt") records"; fi

# 10. Shift end: the summary, computed from the journal, on the screen and on stdout.
start s9 "$A" --reader mock:no-taps.txt --events json:events.jsonl
wait_for s9 "運転士 D042" || bad shift_continues "the open shift was not found after restarts"
keys s9 e
expect shift_summary s9 "SHIFT SUMMARY" "Riders 乗車: 4" "adult(大人) 2 child(小児) 2" \
	"P10 1 KIDS 2 override 1" "denylisted 1 no-entitlement 1" "Overrides 運転士判断: 1" \
	"override-paper-pass 1"
screen s9 > "$T/summary-80x24.txt"
keys s9 Space
expect summary_closes s9 "SHIFT ENDED" "乗務前 no shift"
quit s9 "$A" || bad summary_quit "bad exit"
grep -qF "Riders 乗車: 4" "$A/after.s9" && ok summary_on_stdout || bad summary_on_stdout "not printed"

# 11. The event stream against the journal.
if ! "$KP_BIN/kippuctl" journal list "$A/terminal.db" > "$A/journal.txt"; then
	bad events_match_journal "journal list failed"
elif out=$(events_match "$A" 2>&1); then ok events_match_journal; else
	bad events_match_journal "$out"; fi
grep -q '"type":"summary"' "$A/events.jsonl" && grep -q '"type":"console","time"' "$A/events.jsonl" &&
	grep -q '"type":"inspect"' "$A/events.jsonl" && ok events_other_kinds ||
	bad events_other_kinds "summary, console or inspect event missing"

# 12. A whole shift in one run, in real time: start, seven taps of four card kinds,
#     refusals, an override, the end and its summary.
B="$T/b"
setup "$B" || bad setup_b "kippuctl failed"
# A My Number card (JPKI test CA) whose linkage holds the resident category and a pass.
# Certificates follow the scenario's clock (2026-11-26), never the wall clock.
(cd "$B" && mkdir -p cards &&
 "$KP_BIN/kippuctl" jpki ca create --key jpki-ca.key --cert jpki-ca.crt \
	--not-before 2026-01-01T00:00:00+09:00 >/dev/null &&
 "$KP_BIN/kippuctl" jpki card create --ca-key jpki-ca.key --ca-cert jpki-ca.crt \
	--dir cards/hanako --serial 7305100100001001 --not-before 2026-04-01T00:00:00+09:00 >/dev/null &&
 L=$("$KP_BIN/kippuctl" linkage token --token-key token.key --cert cards/hanako/auth.der \
	--jpki-ca jpki-ca.crt) &&
 printf '%s\n' "product RES nride 30 OP-A Resident demand-bus pass" "product-category RES resident" \
	"entitlement 2010 token:$L RES 10 2026-11-01T00:00:00+09:00 2026-12-01T04:00:00+09:00" \
	"eligibility token:$L resident 2026-04-01T00:00:00+09:00 2027-04-01T00:00:00+09:00 via:token:$L" \
	> resident.txt &&
 "$KP_BIN/kippuctl" load terminal.db resident.txt --token-key token.key >/dev/null &&
 echo "jpki_ca = jpki-ca.crt" >> terminal.conf) || bad setup_mynumber "kippuctl jpki failed"
start w "$B" --reader mock:shift.txt --events json:events.jsonl
if wait_for w "乗務前 no shift"; then
	keys w s; keys w D007; keys w Enter
fi
expect whole_shift_taps w "Scenario ended" "RES" "住民 (resident)" "My Number linked" "no-entitlement" \
	"unsupported-card" "乗車 3"
screen w > "$T/mynumber-resident.txt"
keys w o; wait_for w "Override: 1 unreadable"; keys w 1
expect whole_shift_override w "運転士判断：カード読取不可" "record 9, no card"
keys w e
expect whole_shift_summary w "SHIFT SUMMARY" "driver D007" "Riders 乗車: 4" \
	"adult(大人) 2 child(小児) 1 resident(住民) 1" "P10 1 KIDS 1 RES 1 override 1" \
	"denylisted 1 unsupported-card 1 no-entitlement 1" "override-unreadable 1"
screen w > "$T/whole-shift.txt"
quit w "$B" || bad whole_shift_quit "bad exit"
if ! "$KP_BIN/kippuctl" journal list "$B/terminal.db" > "$B/journal.txt"; then
	bad whole_shift_events "journal list failed"
elif out=$(events_match "$B" 2>&1); then ok whole_shift_events; else
	bad whole_shift_events "$out"; fi
"$KP_BIN/kippuctl" journal verify "$B/terminal.db" --ca "$B/ca.crt" >/dev/null 2>&1 &&
	ok whole_shift_journal_verifies || bad whole_shift_journal_verifies "journal verify failed"
# No raw id of the shift's cards (IDm, PUPI, My Number serial and subject) in the database,
# logs, HMI output, screens or the event stream (tests/no_card_ids.py).
if python3 "$HERE/no_card_ids.py" "$B" > "$T/ids.out" 2>&1; then
	ok whole_shift_no_card_id
else
	bad whole_shift_no_card_id "$(cat "$T/ids.out")"
fi

# 13. Bad input: a bad setting stops at start with a clear message; an unwritable events
#     path is reported and the terminal keeps serving; --events json cannot share the screen.
cd "$B" || exit 1
printf 'console_language = fr\n' > bad.conf
out=$("$KP_BIN/kippu-terminal" --config bad.conf 2>&1); rc=$?
[ $rc = 2 ] && echo "$out" | grep -qF "bad.conf:1: console_language: ja or en" && ok bad_config ||
	bad bad_config "rc $rc: $out"
out=$("$KP_BIN/kippu-terminal" --config terminal.conf --reader mock:one-alice.txt --hmi mock: \
	--events json:/nonexistent/dir/ev.jsonl 2>&1); rc=$?
[ $rc = 0 ] && echo "$out" | grep -qF "events: cannot open /nonexistent/dir/ev.jsonl" &&
	echo "$out" | grep -qF "1 taps, 1 accepted" && ok events_unwritable_keeps_serving ||
	bad events_unwritable_keeps_serving "rc $rc: $out"
out=$("$KP_BIN/kippu-terminal" --config terminal.conf --console --events json 2>&1 </dev/null); rc=$?
[ $rc = 2 ] && echo "$out" | grep -qF "use --events json:PATH" && ok events_stdout_with_console ||
	bad events_stdout_with_console "rc $rc: $out"
out=$("$KP_BIN/kippu-terminal" --config terminal.conf --console-mode fast 2>&1); rc=$?
[ $rc = 2 ] && echo "$out" | grep -qF "console_mode: charge, confirm or validate" && ok bad_mode ||
	bad bad_mode "rc $rc: $out"
# Without the console the stream goes to stdout, one object per line, and to a FIFO.
out=$("$KP_BIN/kippu-terminal" --config terminal.conf --reader mock:one-dave.txt --hmi mock: \
	--events json 2>/dev/null); rc=$?
[ $rc = 0 ] &&
	echo "$out" | python3 -c 'import json,sys; e=[json.loads(l) for l in sys.stdin]; sys.exit(0 if e and e[-1]["reason"]=="denylisted" else 1)' &&
	ok events_stdout || bad events_stdout "rc $rc: $out"
mkfifo ev.fifo
# The follower holds the FIFO open before the terminal starts (the terminal's non-blocking
# open finds no reader otherwise, and retries only every 2 s), then reads to the end.
rm -f fifo.ready
timeout $WAIT python3 -c '
import os, select, sys, time
fd = os.open("ev.fifo", os.O_RDONLY | os.O_NONBLOCK)
open("fifo.ready", "w").close()
got = b""
while True:
    select.select([fd], [], [])
    chunk = os.read(fd, 65536)
    if not chunk and got:
        break
    if not chunk:
        time.sleep(0.05)        # no writer yet: the FIFO reads as its end
    got += chunk
open("fifo.out", "wb").write(got)
' &
reader=$!
i=0; while [ ! -e fifo.ready ] && [ $i -lt $((WAIT * 10)) ]; do sleep 0.1; i=$((i + 1)); done
"$KP_BIN/kippu-terminal" --config terminal.conf --reader mock:one-kenta.txt --hmi mock: \
	--events json:ev.fifo 2>/dev/null
rc=$?
wait $reader
[ $rc = 0 ] && grep -q '"product":"KIDS"' fifo.out && ok events_fifo ||
	bad events_fifo "rc $rc: $(cat fifo.out)"
cd - >/dev/null

# 14. A reader that cannot be opened and a backend that does not answer: the status line
#     says so, the event stream gets both, the console keeps serving the driver's keys.
cp "$B/terminal.conf" "$B/sync.conf"
printf 'backend = 127.0.0.1:1\nbackend_cert = ca.crt\nsync_interval = 5\n' >> "$B/sync.conf"
KP_CONF=sync.conf start z "$B" --reader libnfc:pn532_uart:/nonexistent/tty --events json:ev-offline.jsonl
expect offline_status z "Sync never FAIL" "Reader OFFLINE" "Denylist no sync!"
keys z T
expect offline_keys_work z "New trip"
quit z "$B" || bad offline_quit "bad exit"
grep -q '"type":"reader".*"state":"offline"' "$B/ev-offline.jsonl" &&
	grep -q '"type":"sync".*"state":"failed".*Connection refused' "$B/ev-offline.jsonl" &&
	ok events_reader_sync || bad events_reader_sync "$(cat "$B/ev-offline.jsonl")"

# 15. Denylist age: last current 33 h before the scenario's clock, past the 24 h limit
#     (OLD!), then within a 48 h one. The clock is the reader's (the scenario's).
sqlite3 "$B/terminal.db" "INSERT OR REPLACE INTO meta(key, value) VALUES \
	('console_last_sync_ms', '$(( (1795651140 - 33 * 3600) * 1000 ))')" ||
	bad denylist_old "sqlite3 could not set the last sync"
start o1 "$B" --reader mock:no-taps.txt
expect denylist_old o1 "Denylist 33h OLD!" "Clock reader"
quit o1 "$B" || bad denylist_old_quit "bad exit"
start o2 "$B" --reader mock:no-taps.txt --denylist-max-age 48h
expect denylist_fresh o2 "Denylist 33h |"
quit o2 "$B" || bad denylist_fresh_quit "bad exit"

# 16. Outside a UTF-8 locale: English only, no broken characters.
KP_LANG=C start c1 "$B" --reader mock:one-alice-later.txt --console-mode validate
expect ascii_locale c1 "*** CARD CONTENTS ***" "P10: 1 rides" "Reader online"
if ! screen c1 > "$T/ascii.txt"; then bad ascii_only "no screen: the tmux server of c1 is gone"
elif LC_ALL=C grep -q '[^ -~]' "$T/ascii.txt"; then bad ascii_only "non-ASCII on the screen"
else ok ascii_only; fi
quit c1 "$B" || bad ascii_quit "bad exit"

# For the README: the screens of this run.
[ -n "$KP_CONSOLE_CAPTURE" ] && cp "$T"/*.txt "$A/events.jsonl" "$KP_CONSOLE_CAPTURE"/ 2>/dev/null

finish "driver console"
