#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The backend's store on PostgreSQL (README, "PostgreSQL"): one throw-away
# server from tests/pgtmp.sh, then
# - the store-level tests that run on both engines (test_delta whole, the store cases of
#   test_fare_remote, test_bundle_fares and test_linkage; each case gets a schema of its
#   own: tests/testutil_db.h), against it;
# - the real programs: kippuctl sets up the demo fleet in a postgresql:// database, two
#   kippu-backend --db postgresql://... serve it; the demo terminal's journal (and a copy of
#   it) sync through both instances at once, then once more: its 21 records are stored once
#   with their chain, monthly partitions exist, the metrics read it, it exports; kippuctl's
#   listings of it are those of the same journal synced into an SQLite backend;
# - the bad case: a database that cannot be reached is named, the program exits 1.
# Prints cmocka-style lines so tests/run.sh counts it.
KP_BIN=${KP_BIN:-build/bin}
KP_TESTS=${KP_TESTS:-build/tests}
case "$KP_BIN" in /*) ;; *) KP_BIN=$(pwd)/$KP_BIN ;; esac
case "$KP_TESTS" in /*) ;; *) KP_TESTS=$(pwd)/$KP_TESTS ;; esac
HERE=$(cd "$(dirname "$0")/.." && pwd)
TOOLS="$HERE/../tools"
PGTMP="$HERE/pgtmp.sh"
WAIT=60
. "$HERE/shtest.sh"                     # ok, bad, finish
T=$(mktemp -d "${TMPDIR:-/tmp}/kippu-storepg.XXXXXX")
DIR=""
BPID=""
BPID2=""
cleanup() {
	[ -n "$BPID" ] && kill "$BPID" 2>/dev/null && wait "$BPID" 2>/dev/null
	[ -n "$BPID2" ] && kill "$BPID2" 2>/dev/null && wait "$BPID2" 2>/dev/null
	[ -n "$DIR" ] && [ -d "$DIR" ] && sh "$PGTMP" stop "$DIR"
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

if ! DIR=$(sh "$PGTMP" start 2> "$T/start.err"); then
	bad pgtmp_start "$(tail -n 5 "$T/start.err")"
	finish "test_store_pg"
fi
URI=$(sh "$PGTMP" uri "$DIR")
q() { psql "$1" -Atc "$2" 2>&1; }

# --- the store's own tests on PostgreSQL ---
for t in test_delta:5 test_fare_remote:6 test_bundle_fares:1 test_linkage:3; do
	name=${t%:*}; n=${t#*:}
	if KIPPU_TEST_PG=$URI "$KP_TESTS/$name" > "$T/$name.out" 2>&1 &&
	   grep -q "^\[  PASSED  \] $n test(s)" "$T/$name.out"; then
		ok "$name on PostgreSQL ($n cases)"
	else
		bad "${name}_postgresql" "$(grep -E 'FAILED|ERROR|LINE' "$T/$name.out" | tail -n 8)"
	fi
done

# --- the programs on a postgresql:// database ---
psql "$URI" -qc "CREATE DATABASE fleet" > /dev/null 2>&1
DB=$(echo "$URI" | sed 's|:///kippu?|:///fleet?|')
cd "$T" || exit 1
CTL="$KP_BIN/kippuctl"
if demo_fleet "$CTL" "$TOOLS" "$DB" > setup.log 2>&1; then
	ok "kippuctl backend operator / terminal add on $DB"
else
	bad kippuctl_on_uri "$(tail -n 3 setup.log)"
	finish "test_store_pg"
fi
[ "$(q "$DB" "SELECT count(*) FROM terminal_registry WHERE id = 'BUS-OPA-0042'")" = 1 ] &&
	ok "the terminal is registered in PostgreSQL" ||
	bad registry_row "$(q "$DB" 'SELECT * FROM terminal_registry')"
"$KP_BIN/kippu-terminal" --config terminal.conf --offline > term.out 2> term.log ||
	bad terminal_run "$(tail -n 2 term.log)"
"$KP_BIN/kippu-backend" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --db "$DB" --ca ca.crt \
	--cert backend.crt --key backend.key --timeout-ms 5000 > backend.out 2> backend.log &
BPID=$!
if ! wait_line backend.out 'metrics on'; then
	bad backend_start "$(tail -n 3 backend.log)"
	finish "test_store_pg"
fi
ok "kippu-backend --db postgresql://... serves"
PORT=$(sed -n 's/^kippu-backend: listening on 127.0.0.1:\([0-9]*\)$/\1/p' backend.out)
# a second instance on the same database
"$KP_BIN/kippu-backend" --listen 127.0.0.1:0 --db "$DB" --ca ca.crt --cert backend.crt \
	--key backend.key --timeout-ms 5000 > backend2.out 2> backend2.log &
BPID2=$!
wait_line backend2.out 'listening on' || bad backend2_start "$(tail -n 3 backend2.log)"
PORT2=$(sed -n 's/^kippu-backend: listening on 127.0.0.1:\([0-9]*\)$/\1/p' backend2.out)
# the same journal twice (a copy of the terminal's database), each synced through another
# instance at once: the per-terminal lock has the second batch find the first one's records
# (without it one sync fails on the records' unique key: this case fails)
mkdir twin solo && cp terminal.db terminal.conf terminal.crt terminal.key ca.crt backend.crt twin/ &&
	cp twin/* solo/
terminal_to_backend "$PORT"
(cd twin && terminal_to_backend "$PORT2")
held=$("$CTL" journal verify terminal.db | sed -n 's/.* \([0-9]*\) records.*/\1/p')
"$KP_BIN/kippu-terminal" --config terminal.conf --sync-once 2>> term.log &
S1=$!
(cd twin && "$KP_BIN/kippu-terminal" --config terminal.conf --sync-once 2>> term.log) &
S2=$!
wait $S1; r1=$?
wait $S2; r2=$?
if [ $r1 = 0 ] && [ $r2 = 0 ]; then
	ok "one journal synced through two instances at once"
else
	bad sync_two_instances "exit $r1 $r2: $(tail -n 2 term.log) $(tail -n 2 twin/term.log)"
fi
"$KP_BIN/kippu-terminal" --config terminal.conf --sync-once 2>> term.log ||
	bad sync_again "$(tail -n 2 term.log)"
kill "$BPID2" 2>/dev/null; wait "$BPID2" 2>/dev/null; BPID2=""
stored=$(q "$DB" "SELECT count(*) || ' ' || count(DISTINCT seq) || ' ' || max(seq)
	FROM records WHERE terminal = 'BUS-OPA-0042'")
acked=$(q "$DB" "SELECT acked FROM journals WHERE terminal = 'BUS-OPA-0042'")
if [ -n "$held" ] && [ "$stored" = "$held $held $held" ] && [ "$acked" = "$held" ]; then
	ok "all $held records stored once (synced twice), acked $acked"
else
	bad records_once "terminal holds '$held', stored (n distinct max) '$stored', acked '$acked'"
fi
# the chain: each stored record's payload names its predecessor's hash (the terminal's check
# over what the backend holds: the ingest verified it record by record)
links=$(q "$DB" "SELECT count(*) FROM records r JOIN records p ON p.terminal = r.terminal
	AND p.journal = r.journal AND p.seq = r.seq - 1
	WHERE position(p.hash IN r.payload) > 0")
[ "$links" = "$((held - 1))" ] && ok "chain: $links links, each record names its predecessor's hash" ||
	bad chain "$links links of $((held - 1))"
parts=$(q "$DB" "SELECT count(*) FROM pg_tables WHERE tablename ~ '^records_[0-9]{4}_[0-9]{2}$'")
[ "$parts" -ge 3 ] 2>/dev/null && ok "monthly record partitions made ahead ($parts)" ||
	bad partitions "$parts"
# the metrics read the store through their own read-only connection
MPORT=$(sed -n 's/^kippu-backend: metrics on 127.0.0.1:\([0-9]*\)$/\1/p' backend.out)
if python3 "$HERE/prom_check.py" scrape "http://127.0.0.1:$MPORT/metrics" m.prom $WAIT &&
   [ "$(python3 "$HERE/prom_check.py" value m.prom \
        'kippu_backend_terminal_unsent_records{terminal="BUS-OPA-0042"}')" = 0 ] &&
   python3 "$HERE/prom_check.py" value m.prom \
        'kippu_backend_terminal_last_seen_age_seconds{terminal="BUS-OPA-0042"}' > /dev/null &&
   python3 "$HERE/prom_check.py" value m.prom kippu_backend_audit_lag_records > /dev/null; then
	ok "metrics from PostgreSQL: the terminal's unsent records 0, last seen, audit lag"
else
	bad metrics "$(grep -E 'unsent|last_seen_age|audit_lag' m.prom | head -n 3) $(tail -n 2 backend.log)"
fi
kill "$BPID" 2>/dev/null; wait "$BPID" 2>/dev/null; BPID=""

# --- the listings: the same journal in an SQLite backend lists the same ---
"$CTL" backend operator solo/backend.db OP-A "Bus A" > /dev/null &&
	"$CTL" backend terminal add solo/backend.db BUS-OPA-0042 --operator OP-A > /dev/null ||
	bad sqlite_fleet "kippuctl on solo/backend.db"
"$KP_BIN/kippu-backend" --listen 127.0.0.1:0 --db solo/backend.db --ca ca.crt \
	--cert backend.crt --key backend.key --timeout-ms 5000 > backend3.out 2> backend3.log &
BPID=$!
wait_line backend3.out 'listening on' || bad backend3_start "$(tail -n 3 backend3.log)"
PORT3=$(sed -n 's/^kippu-backend: listening on 127.0.0.1:\([0-9]*\)$/\1/p' backend3.out)
(cd solo && terminal_to_backend "$PORT3" &&
	"$KP_BIN/kippu-terminal" --config terminal.conf --sync-once 2>> term.log) ||
	bad sync_sqlite "$(tail -n 2 solo/term.log)"
kill "$BPID" 2>/dev/null; wait "$BPID" 2>/dev/null; BPID=""
for l in records ledger entitlements overdrafts products fare-rules "cert list" clones \
         "quarantine list"; do
	"$CTL" backend $l "$DB" --csv > pg.csv 2> pg.err; r1=$?
	"$CTL" backend $l solo/backend.db --csv > sq.csv 2> sq.err; r2=$?
	if [ $r1 = 0 ] && [ $r2 = 0 ] && [ -s sq.csv ] && cmp -s pg.csv sq.csv; then
		ok "backend $l: the same on both engines ($(wc -l < pg.csv) lines)"
	elif [ "$l" = "cert list" ] && [ $r1 = 0 ] && [ $r2 = 0 ] &&
	     [ "$(cut -d, -f1-5 pg.csv)" = "$(cut -d, -f1-5 sq.csv)" ]; then
		ok "backend $l: the same on both engines (but the times of use)"
	else
		bad "listing_$(echo "$l" | tr ' ' _)" "exit $r1/$r2: $(head -c 300 pg.err) $(diff pg.csv sq.csv | head -n 4)"
	fi
done
if "$CTL" backend export "$DB" BUS-OPA-0042 export > export.out 2>&1 &&
   grep -q "exported $held records of terminal BUS-OPA-0042" export.out; then
	ok "backend export from PostgreSQL: $held records"
else
	bad export "$(cat export.out)"
fi
for l in terminals journals; do
	if "$CTL" backend $l "$DB" --csv > pg.csv 2> pg.err && grep -q BUS-OPA-0042 pg.csv; then
		ok "backend $l on PostgreSQL"
	else
		bad "listing_$l" "$(head -c 300 pg.err)"
	fi
done

# --- a database that cannot be reached: named, exit 1 ---
"$CTL" backend operator "postgresql:///kippu?host=$T/none&user=kippu" OP-X X > none.out 2>&1
rc=$?
if [ $rc = 1 ] && grep -q "cannot connect to PostgreSQL" none.out; then
	ok "unreachable database: $(head -n 1 none.out | cut -c1-90)"
else
	bad unreachable "exit $rc: $(cat none.out)"
fi
finish "test_store_pg"
