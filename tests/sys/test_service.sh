#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Running as a service (README, "Running as a service"): kippu-backend and kippu-terminal
# under a stand-in for systemd's notify socket (tests/sys/notify_wait.py) send READY=1,
# WATCHDOG=1 at half the interval while their loop turns, STOPPING=1 after SIGTERM and exit
# 0; databases and their -wal/-shm files are 0600 whatever the umask (000 and 022); log
# lines on stderr are "PROGRAM: message"; relative paths in a configuration file are
# relative to its folder (the command line's to the working directory); $STATE_DIRECTORY
# holds the default databases; kippu-backend --config, its errors and --config-keys.
# Prints cmocka-style lines so tests/run.sh counts it. Needs python3 (make deps).
KP_BIN=${KP_BIN:-build/bin}
KP_BIN=$(cd "$KP_BIN" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
T=$(mktemp -d "${TMPDIR:-/tmp}/kippu-service.XXXXXX")
trap 'rm -rf "$T"' EXIT INT TERM
. "$(dirname "$0")/../shtest.sh"    # ok, bad, finish (the lines run.sh counts)
CTL="$KP_BIN/kippuctl"
# A 2 s watchdog: pings are due every 1 s, and a gap up to the whole interval passes, so a
# loaded machine's scheduling delays (up to a second) do not fail the test.
notify() { python3 "$HERE/notify_wait.py" "$T" 2000000 "$@" > "$T/notify.out" 2>&1; }
# notify_nowd: the same without a watchdog (the runs that check files and paths, not pings)
notify_nowd() { python3 "$HERE/notify_wait.py" "$T" 0 "$@" > "$T/notify.out" 2>&1; }
seen() { for w in READY=1 STOPPING=1 "exit 0"; do grep -q "^$w" "$T/notify.out" || return 1; done; }
sees() { for w in READY=1 "WATCHDOG=1 x3" STOPPING=1 "exit 0"; do
	grep -q "^$w" "$T/notify.out" || return 1; done; }

echo "[==========] Running 22 test(s)."
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
	# the watchdog's pings once per program (umask 022); umask 000 checks the rest
	nf=notify_nowd; ck=seen; [ $u = 022 ] && { nf=notify; ck=sees; }
	if (umask $u; KP_STAT_FILES="b.db b.db-wal b.db-shm" $nf "$KP_BIN/kippu-backend" \
	    --listen 127.0.0.1:0 --db b.db --ca ca.crt --cert backend.crt --key backend.key) &&
	   $ck; then
		ok "backend_notify_umask_$u"
	else
		bad "backend_notify_umask_$u" "$(cat "$T/notify.out")"
	fi
	m=$(stat -c %a b.db 2>/dev/null)
	[ "$m" = 600 ] && ok "backend_db_0600_umask_$u" || bad "backend_db_0600_umask_$u" "b.db mode $m"
	rm -f t.db t.db-wal t.db-shm hmi.log
	if (umask $u; KP_STAT_FILES="t.db t.db-wal t.db-shm" $nf "$KP_BIN/kippu-terminal" \
	    --config t.conf --offline) && $ck; then
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
	# its HMI log (mock:hmi.log), and the PN532 emulator's log
	rm -f emu.log
	(umask $u; "$KP_BIN/kippu-pn532-emu" --scenario idle.txt --log emu.log > emu.out 2>&1 &
	 # until it is up and its log exists: 60 s by the clock (a loaded machine's sleeps run long)
	 p=$!; end=$(($(date +%s) + 60))
	 while [ "$(date +%s)" -lt $end ] && ! { grep -q pty emu.out && [ -e emu.log ]; }; do sleep 0.1; done
	 kill $p; wait $p)
	m="$(stat -c %a hmi.log 2>/dev/null) $(stat -c %a emu.log 2>/dev/null)"
	[ "$m" = "600 600" ] && ok "logs_0600_umask_$u" || bad "logs_0600_umask_$u" "hmi.log, emu.log modes: $m"
done

# ---- configuration files: relative paths, the command line, $STATE_DIRECTORY ----
mkdir -p conf elsewhere state
cat > conf/once.txt <<'SC'
start 2026-11-26T08:00:00+09:00
card alice felica idm=0101020304050607 pmm=100B4B428485D0FF sys=0003,FE00 balance=1500 cardtype=2 region=0
tap +0 alice
SC
cat > conf/t.conf <<'CONF'
terminal_id = T1
operator = OP-A
reader = mock:once.txt
hmi = mock:hmi2.log
database = ../t2.db
key = ../T1.key
cert = ../T1.crt
token_key = ../token.key
CONF
grep -v '^database' conf/t.conf > conf/nodb.conf
cat > conf/b.conf <<'CONF'
# the backend's settings
listen = 127.0.0.1:0
db = ../cfg.db
ca = ../ca.crt
cert = ../backend.crt
key = ../backend.key
CONF
grep -v '^db' conf/b.conf > conf/nodb-b.conf
printf 'listen = 127.0.0.1:0\nbogus = 1\n' > conf/unknown.conf
printf '# a comment\nmax-conns = 0\n' > conf/range.conf
printf 'timeout-ms = 100\ntimeout-ms = 200\n' > conf/twice.conf
printf 'listen\n' > conf/noeq.conf

cd elsewhere || exit 1
if "$KP_BIN/kippu-terminal" --config ../conf/t.conf --offline 2> t.err &&
   [ -f ../t2.db ] && [ -f ../conf/hmi2.log ] && [ -z "$(ls)" -o "$(ls)" = t.err ]; then
	ok terminal_config_paths_relative_to_the_file
else
	bad terminal_config_paths_relative_to_the_file "$(cat t.err; ls -R ..)"
fi
if grep -q '^kippu-terminal: stopping: 1 taps' t.err; then
	ok terminal_stderr_lines_prefixed
else
	bad terminal_stderr_lines_prefixed "$(cat t.err)"
fi
if "$KP_BIN/kippu-terminal" --config ../conf/t.conf --offline --db cli.db 2> t.err &&
   [ -f cli.db ]; then
	ok terminal_command_line_paths_relative_to_cwd
else
	bad terminal_command_line_paths_relative_to_cwd "$(cat t.err)"
fi
if STATE_DIRECTORY="$T/state" "$KP_BIN/kippu-terminal" --config ../conf/nodb.conf --offline \
   2> t.err && [ -f ../state/terminal.db ] && [ "$(stat -c %a ../state/terminal.db)" = 600 ]; then
	ok terminal_state_directory_default_db
else
	bad terminal_state_directory_default_db "$(cat t.err; ls ../state)"
fi
if notify_nowd "$KP_BIN/kippu-backend" --config ../conf/b.conf && seen && [ -f ../cfg.db ] &&
   [ ! -f cfg.db ] && grep -q '^kippu-backend: stopping$' "$T/notify.out"; then
	ok backend_config_paths_relative_to_the_file
else
	bad backend_config_paths_relative_to_the_file "$(cat "$T/notify.out")"
fi
if notify_nowd "$KP_BIN/kippu-backend" --config ../conf/b.conf --db cli-b.db && seen &&
   [ -f cli-b.db ]; then
	ok backend_command_line_wins_over_the_file
else
	bad backend_command_line_wins_over_the_file "$(cat "$T/notify.out")"
fi
if STATE_DIRECTORY="$T/state" notify_nowd "$KP_BIN/kippu-backend" --config ../conf/nodb-b.conf &&
   seen && [ -f ../state/backend.db ]; then
	ok backend_state_directory_default_db
else
	bad backend_state_directory_default_db "$(cat "$T/notify.out"; ls ../state)"
fi
errs=""
for c in "unknown:conf/unknown.conf:2: bogus: unknown key" \
         "range:conf/range.conf:2: max-conns wants a whole number from 1 to 4096, not '0'" \
         "twice:conf/twice.conf:2: timeout-ms: set twice" \
         "noeq:conf/noeq.conf:1: expected key = value" \
         "none:conf/none.conf: No such file or directory"; do
	f=${c%%:*}; want=${c#*:}
	"$KP_BIN/kippu-backend" --config "../conf/$f.conf" > /dev/null 2> b.err
	rc=$?
	[ $rc = 2 ] && grep -qF "kippu-backend: ../$want" b.err || errs="$errs [$f: rc $rc: $(cat b.err)]"
done
[ -z "$errs" ] && ok backend_config_errors_name_file_and_line || bad backend_config_errors_name_file_and_line "$errs"
# metrics-listen from the file: the metrics listener comes up and answers /metrics.
{ cat ../conf/b.conf; echo 'metrics-listen = 127.0.0.1:0'; } > ../conf/m.conf
"$KP_BIN/kippu-backend" --config ../conf/m.conf > m.out 2> m.err &
mpid=$!
mport=""
for i in $(seq 1 200); do          # a deadline of about 20 s for its "metrics on" line
	mport=$(sed -n 's/^kippu-backend: metrics on 127\.0\.0\.1:\([0-9]*\)$/\1/p' m.out)
	[ -n "$mport" ] || ! kill -0 $mpid 2> /dev/null && break
	sleep 0.1
done
if [ -n "$mport" ] && python3 -c 'import sys, urllib.request
r = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1], timeout=10)
sys.exit(0 if r.status == 200 and b"kippu_backend_" in r.read() else 1)' "$mport"; then
	ok backend_config_metrics_listen
else
	bad backend_config_metrics_listen "port '$mport': $(cat m.out m.err)"
fi
kill $mpid 2> /dev/null; wait $mpid 2> /dev/null
# A TLS file that cannot be read is named, and no database is left behind.
"$KP_BIN/kippu-backend" --listen 127.0.0.1:0 --db fresh.db --ca ../ca.crt \
	--cert ../backend.crt --key ../missing.key > /dev/null 2> fresh.err
rc=$?
if [ $rc = 1 ] && [ ! -e fresh.db ] &&
   grep -q 'cannot read .*missing.key: No such file or directory' fresh.err; then
	ok backend_missing_key_leaves_no_database
else
	bad backend_missing_key_leaves_no_database "exit $rc, $(ls fresh.db 2>&1), $(cat fresh.err)"
fi
"$KP_BIN/kippu-backend" --config-keys > keys.out 2>&1
missing=""
for k in 'listen` | `127.0.0.1:7800' 'db` | `backend.db' 'ca` | `ca.crt' 'cert` | `backend.crt' \
         'key` | `backend.key' 'max-conns` | `256' 'max-unauth` | `256' 'max-per-addr` | `16' \
         'timeout-ms` | `10000' 'change-log-days` | `7'; do
	grep -qF "| \`$k\` |" keys.out || missing="$missing [$k]"
done
grep -q '^| `metrics-listen` | none | ' keys.out || missing="$missing [metrics-listen]"
[ -z "$missing" ] && [ "$(wc -l < keys.out)" = 13 ] && ok backend_config_keys ||
	bad backend_config_keys "missing$missing: $(cat keys.out)"
cd "$T" || exit 1

# kippuctl's keys 0600 and certificates 0644, whatever the umask
wrong=""
for u in 000 022 0277; do
	mkdir -p "keys$u" && cd "keys$u" || exit 1
	(umask $u
	 "$CTL" ca create --key ca.key --cert ca.crt --cn "Umask CA" &&
	 "$CTL" terminal create --ca-key ca.key --ca-cert ca.crt --id T9 --key T9.key --cert T9.crt &&
	 "$CTL" token-key create token.key) > /dev/null 2>&1 || wrong="$wrong [umask $u: failed]"
	for f in ca.key:600 T9.key:600 token.key:600 ca.crt:644 T9.crt:644; do
		m=$(stat -c %a "${f%:*}" 2>/dev/null)
		[ "$m" = "${f#*:}" ] || wrong="$wrong [umask $u: ${f%:*} $m]"
	done
	cd "$T" || exit 1
done
[ -z "$wrong" ] && ok kippuctl_keys_0600_certificates_0644 ||
	bad kippuctl_keys_0600_certificates_0644 "$wrong"

finish "running as a service"
