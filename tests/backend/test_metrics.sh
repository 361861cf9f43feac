#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Monitoring (README, "Monitoring"): the real kippu-backend with --metrics-listen
# 127.0.0.1:0 is scraped before and after a known sync from the real kippu-terminal, and the
# terminal's metrics_file after a mock scenario of 21 known taps (tools/demo/scenario.txt,
# as tests/tools/test_integration.c decides them). Both texts are checked by a small parser
# (tests/prom_check.py: HELP/TYPE before samples, `name{labels} value`, cumulative
# histograms ending with +Inf = _count). Also: 404 and 405, a client without a
# certificate counted as a failed handshake, a terminal's unsent records (0 after a full
# sync; what its hello reported beyond what the backend holds when its batch is refused), an unregistered terminal and a quarantined
# one's batch counted as refused, bad --metrics-listen values, a metrics port taken, an
# unwritable metrics_file. Waits poll with a deadline; no fixed sleeps.
# Prints cmocka-style lines so tests/run.sh counts it. Needs python3 (make deps).
KP_BIN=${KP_BIN:-build/bin}
case "$KP_BIN" in /*) ;; *) KP_BIN=$(pwd)/$KP_BIN ;; esac
HERE=$(cd "$(dirname "$0")/.." && pwd)
TOOLS="$HERE/../tools"
pc() { python3 "$HERE/prom_check.py" "$@"; }
T=$(mktemp -d "${TMPDIR:-/tmp}/kippu-metrics.XXXXXX")
WAIT=60
. "$(dirname "$0")/../shtest.sh"    # ok, bad, finish (the lines run.sh counts)
BPID=""
cleanup() {
	[ -n "$BPID" ] && kill "$BPID" 2>/dev/null && wait "$BPID" 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
# check NAME WHAT COMMAND...: one test case, named; WHAT says what failed.
check() { n=$1; w=$2; shift 2; if "$@" > "$T/check.out" 2>&1; then ok "$n"; else bad "$n" "$w: $(tail -n 2 "$T/check.out")"; fi; }
# val FILE SAMPLE: the sample's value ("absent" when it is not there)
val() { pc value "$1" "$2" 2>/dev/null || echo absent; }

cd "$T" || exit 1
CTL="$KP_BIN/kippuctl"
DB=backend.db
demo_fleet "$CTL" "$TOOLS" $DB > setup.log 2>&1 ||
	{ cat setup.log; echo "[  FAILED  ] 1 test(s), listed below:"; exit 1; }

# --- usage errors of --metrics-listen ---
for v in nocolon ":9100" "127.0.0.1:"; do
	"$KP_BIN/kippu-backend" --metrics-listen "$v" --db $DB > out.txt 2> err.txt
	rc=$?
	if [ $rc = 2 ] && grep -q -- '--metrics-listen wants HOST:PORT' err.txt; then ok "bad_listen_$v"
	else bad "bad_listen_$v" "exit $rc, $(cat err.txt)"; fi
done
for v in 127.0.0.1:http 127.0.0.1:65536; do
	"$KP_BIN/kippu-backend" --metrics-listen "$v" --db $DB > out.txt 2> err.txt
	rc=$?
	if [ $rc = 2 ] && grep -q -- "--metrics-listen wants a port from 0 to 65535, not '${v#*:}'" err.txt
	then ok "bad_port_${v#*:}"; else bad "bad_port_${v#*:}" "exit $rc, $(cat err.txt)"; fi
done

# --- the backend with metrics ---
"$KP_BIN/kippu-backend" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --db $DB --ca ca.crt \
	--cert backend.crt --key backend.key --timeout-ms 5000 > backend.out 2> backend.log &
BPID=$!
if ! wait_line backend.out 'metrics on'; then
	bad backend_start "no 'metrics on' line: $(cat backend.log)"
	echo "[  FAILED  ] $failed test(s), listed below:"; exit 1
fi
PORT=$(sed -n 's/^kippu-backend: listening on 127.0.0.1:\([0-9]*\)$/\1/p' backend.out)
MPORT=$(sed -n 's/^kippu-backend: metrics on 127.0.0.1:\([0-9]*\)$/\1/p' backend.out)
URL="http://127.0.0.1:$MPORT/metrics"
check backend_lines "no ports" test -n "$PORT" -a -n "$MPORT" -a "$PORT" != "$MPORT"
check scrape_before "scrape" pc scrape "$URL" before.prom $WAIT
check syntax_before "syntax" pc check before.prom
check ingested_zero "ingested before" test "$(val before.prom kippu_backend_records_ingested_total)" = 0
check not_found "status" test "$(pc status GET "http://127.0.0.1:$MPORT/nope")" = 404
check method_post "status" test "$(pc status POST "$URL")" = 405
check method_delete "status" test "$(pc status DELETE "$URL")" = 405

# a metrics port already taken: named, exit 1
"$KP_BIN/kippu-backend" --listen 127.0.0.1:0 --metrics-listen "127.0.0.1:$MPORT" --db $DB \
	--ca ca.crt --cert backend.crt --key backend.key > out2.txt 2> err2.txt
rc=$?
if [ $rc = 1 ] && grep -q "metrics listen on 127.0.0.1:$MPORT" err2.txt; then ok metrics_port_taken
else bad metrics_port_taken "exit $rc, $(cat err2.txt)"; fi

# --- the terminal: 21 known taps offline, figures in its textfile ---
echo "metrics_file = metrics.prom" >> terminal.conf
"$KP_BIN/kippu-terminal" --config terminal.conf --offline > term.out 2> term.log
check terminal_run "kippu-terminal failed" test $? = 0
check terminal_syntax "syntax" pc check metrics.prom
check no_tmp_left "metrics.prom.tmp left behind" test ! -e metrics.prom.tmp
# test_integration.c's table of the scenario's 21 decisions
for want in accepted,ok,4 already,already,1 refused,expired,1 refused,denylisted,1 \
            refused,no-entitlement,1 refused,unsupported-card,1 refused,wrong-operator,1 \
            refused,exhausted,2 refused,card-removed,2 refused,card-error,7; do
	IFS=, read -r res why n <<-EOW
	$want
	EOW
	got=$(val metrics.prom "kippu_terminal_taps_total{result=\"$res\",reason=\"$why\"}")
	check "taps_${res}_$why" "got $got, want $n" test "$got" = "$n"
done
check taps_sum "taps in all" test "$(pc sum metrics.prom kippu_terminal_taps_total)" = 21
check tap_latency_count "histogram count" test "$(val metrics.prom kippu_terminal_tap_seconds_count)" = 21
check unsent_21 "unsent" test "$(val metrics.prom kippu_terminal_unsent_records)" = 21
check no_sync_yet "last sync" test "$(val metrics.prom kippu_terminal_last_sync_timestamp_seconds)" = 0
check wal_present "wal size" test "$(val metrics.prom kippu_terminal_wal_size_bytes)" != absent
check reader_gauge "reader_online" grep -Eq '^kippu_terminal_reader_online [01]$' metrics.prom
check config_key "--config-keys lists metrics_file" sh -c "'$KP_BIN/kippu-terminal' --config-keys | grep -q metrics_file"

# an unwritable metrics_file: said once, the taps go on
sed 's|^metrics_file = .*|metrics_file = nodir/metrics.prom|' terminal.conf > bad.conf
"$KP_BIN/kippu-terminal" --config bad.conf --offline > /dev/null 2> bad.log
rc=$?
check unwritable_runs "exit $rc" test $rc = 0
check unwritable_said "log" grep -q 'metrics_file nodir/metrics.prom.tmp: No such file or directory' bad.log
check unwritable_once "said more than once" test "$(grep -c 'metrics_file nodir' bad.log)" = 1

# --- a known sync: the first 21 records, then the 21 of the run above ---
terminal_to_backend "$PORT"
unsent=$("$CTL" journal verify terminal.db | sed -n 's/.* \([0-9]*\) records.*/\1/p')
"$KP_BIN/kippu-terminal" --config terminal.conf --sync-once 2>> term.log
check sync_once "sync failed: $(tail -n 1 term.log)" test $? = 0
check scrape_after "scrape" pc scrape "$URL" after.prom $WAIT
check syntax_after "syntax" pc check after.prom
check ingested_exact "ingested $(val after.prom kippu_backend_records_ingested_total), want $unsent" \
	test "$(val after.prom kippu_backend_records_ingested_total)" = "$unsent"
check last_seen "no last-seen for the terminal" \
	test "$(val after.prom 'kippu_backend_terminal_last_seen_age_seconds{terminal="BUS-OPA-0042"}')" != absent
UNSENT='kippu_backend_terminal_unsent_records{terminal="BUS-OPA-0042"}'
check unsent_zero "unsent after a full sync: $(val after.prom "$UNSENT")" \
	test "$(val after.prom "$UNSENT")" = 0
check accepted_moved "accepted" test "$(val after.prom kippu_backend_connections_accepted_total)" -ge 1
check verify_hist "verify histogram" test "$(val after.prom kippu_backend_batch_verify_seconds_count)" -ge 1
check commit_hist "commit histogram" test "$(val after.prom kippu_backend_batch_commit_seconds_count)" -ge 1
check db_size "database size" test "$(val after.prom kippu_backend_database_size_bytes | cut -d. -f1)" -gt 0
# the same sync again sends nothing: the count stays
"$KP_BIN/kippu-terminal" --config terminal.conf --sync-once 2>> term.log
pc scrape "$URL" again.prom $WAIT
check ingested_stays "ingested $(val again.prom kippu_backend_records_ingested_total)" \
	test "$(val again.prom kippu_backend_records_ingested_total)" = "$unsent"

# --- a client without a certificate: a failed handshake, counted ---
CERTLESS='kippu_backend_tls_handshake_failures_total{kind="certificate"}'
before=$(val after.prom "$CERTLESS")
check notls_refused "handshake" pc notls 127.0.0.1 "$PORT"
end=$(($(date +%s) + WAIT)); now=$before
while [ "$now" = "$before" ] && [ "$(date +%s)" -le "$end" ]; do
	pc scrape "$URL" tls.prom $WAIT && now=$(val tls.prom "$CERTLESS")
	[ "$now" = "$before" ] && sleep 0.05
done
check tls_failure_counted "failures $before -> $now" test "$now" = $((before + 1))

# --- a terminal the CA certified but the backend does not know: refused, counted ---
UNREG='kippu_backend_connections_refused_total{reason="unregistered"}'
"$CTL" terminal create --ca-key ca.key --ca-cert ca.crt --id BUS-X-09 --key x.key --cert x.crt \
	> /dev/null 2>&1
sed -e 's/^terminal_id = .*/terminal_id = BUS-X-09/' -e 's/^key = .*/key = x.key/' \
    -e 's/^cert = .*/cert = x.crt/' -e 's/^database = .*/database = x.db/' terminal.conf > x.conf
"$KP_BIN/kippu-terminal" --config x.conf --sync-once 2>> x.log
check unregistered_refused "the sync of an unregistered terminal succeeded" test $? = 1
pc scrape "$URL" unreg.prom $WAIT
check unregistered_counted "$(val unreg.prom "$UNREG")" test "$(val unreg.prom "$UNREG")" = 1

# --- a quarantined terminal's batch: refused with its reason, nothing ingested ---
python3 -c "import sqlite3; c = sqlite3.connect('$DB'); c.execute(\"UPDATE terminals SET quarantined = 1 WHERE id = 'BUS-OPA-0042'\"); c.commit()"
"$KP_BIN/kippu-terminal" --config terminal.conf --offline > /dev/null 2>> term.log
"$KP_BIN/kippu-terminal" --config terminal.conf --sync-once 2>> term.log
pc scrape "$URL" quar.prom $WAIT
check refused_quarantined "refused" \
	test "$(val quar.prom 'kippu_backend_records_refused_total{reason="quarantined"}')" = 1
check refused_not_ingested "ingested $(val quar.prom kippu_backend_records_ingested_total)" \
	test "$(val quar.prom kippu_backend_records_ingested_total)" = "$unsent"
# its hello reported the newest seq; the backend holds the first $unsent
total=$("$CTL" journal verify terminal.db | sed -n 's/.* \([0-9]*\) records.*/\1/p')
check unsent_reported "unsent $(val quar.prom "$UNSENT"), want $total - $unsent" \
	test "$total" -gt "$unsent" -a "$(val quar.prom "$UNSENT")" = $((total - unsent))
check no_new_quarantine "quarantines" test "$(val quar.prom kippu_backend_quarantines_total)" = 0

finish "metrics"
