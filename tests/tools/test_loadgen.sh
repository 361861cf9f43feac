#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# kippu-loadgen (README, "Load generator") against a real kippu-backend on loopback: 4
# terminals x 300 records with bundle and delta fetches (each opened and checked as a
# terminal does), then the backend's own listings hold exactly
# those records (300 per terminal, seq 1..300 once each); the printed table has its rows and
# the JSON its figures; errors counted by kind: a closed port (connect), terminals not
# registered (backend), a backend that stops answering (SIGSTOP: timeout); a closed first
# address fails over to the next; certificates read from a folder with the terminals
# registered by the printed kippuctl lines; a bounded run (--rate, --duration) ends on time;
# bad arguments refused with exit 2. Prints cmocka-style lines so tests/run.sh counts it.
# Needs python3 (make deps).
KP_BIN=$(cd "${KP_BIN:-build/bin}" && pwd) || exit 1
T=$(mktemp -d "${TMPDIR:-/tmp}/kippu-loadgen.XXXXXX")
WAIT=60
. "$(dirname "$0")/../shtest.sh"    # ok, bad, finish (the lines run.sh counts)
BPID=""
cleanup() {
	if [ -n "$BPID" ]; then
		kill -CONT "$BPID" 2>/dev/null
		kill "$BPID" 2>/dev/null && wait "$BPID" 2>/dev/null
	fi
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
CTL="$KP_BIN/kippuctl"
LG="$KP_BIN/kippu-loadgen"
DB=backend.db
# wait_line FILE TEXT: until TEXT is in FILE, at most $WAIT s
wait_line() {
	end=$(($(date +%s) + WAIT))
	until grep -q "$2" "$1" 2>/dev/null; do
		[ "$(date +%s)" -gt "$end" ] && return 1
		! kill -0 "$BPID" 2>/dev/null && return 1
		sleep 0.05
	done
}
# check NAME PYTHON...: runs the python check (cwd $T); its output is the failure's reason.
check() {
	name=$1; shift
	if (cd "$T" && python3 -c "$@") > "$T/py.out" 2>&1; then ok "$name"; else bad "$name" "$(cat "$T/py.out")"; fi
}
# err_count FILE KIND: the count of KIND in the table's errors
err_count() { sed -n "s/^| $2 *| *\([0-9]*\) |$/\1/p" "$1"; }
cd "$T" || exit 1

echo "[==========] Running 10 test(s)."
{
	"$CTL" ca create --key ca.key --cert ca.crt &&
	"$CTL" backend create --ca-key ca.key --ca-cert ca.crt --key backend.key --cert backend.crt &&
	"$CTL" backend operator $DB OP-A "Bus A"
} > setup.log 2>&1 || { cat setup.log; echo "[  FAILED  ] 1 test(s), listed below:"; exit 1; }
"$KP_BIN/kippu-backend" --listen 127.0.0.1:0 --db $DB --ca ca.crt --cert backend.crt \
	--key backend.key > backend.out 2> backend.log &
BPID=$!
if ! wait_line backend.out 'listening on'; then
	bad backend_start "no 'listening on' line: $(cat backend.log)"
	finish "kippu-loadgen"
fi
PORT=$(sed -n 's/^kippu-backend: listening on 127.0.0.1:\([0-9]*\)$/\1/p' backend.out)
# a port nothing listens on: bound by the kernel, then closed
FREE=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')

# 1. 4 terminals x 300 records, a bundle fetch after every batch (getconfig, then getdelta
# with the version the bundle gave), registered by --register
"$LG" --backend "127.0.0.1:$PORT" --ca-cert ca.crt --ca-key ca.key --register $DB \
	--terminals 4 --records 300 --config-every 1 --mix ride=5,pass=2,stored=1,refused=1,link=1 \
	--json run.json > run.out 2> run.err
rc=$?
if [ $rc -eq 0 ] && grep -q '^| records/s ingested  *| *[0-9][0-9]* |$' run.out &&
   grep -q '^| exchanges/s  *| *[0-9][0-9]* |$' run.out &&
   grep -q '^| terminals that sent all  *| *4 of *4 |$' run.out &&
   grep -q '^| records ingested (acked)  *| *1200 |$' run.out &&
   grep -q '^| hello  *| *4 |' run.out && grep -q '^| records  *| *8 |' run.out &&
   grep -q '^| getconfig  *| *4 |' run.out && grep -q '^| getdelta  *| *4 |' run.out &&
   grep -q '^| handshake  *| *4 |' run.out &&
   [ "$(grep -c '^| \(connect\|tls\|timeout\|refused\|backend\|protocol\)  *| *0 |$' run.out)" = 6 ]
then ok run_table; else bad run_table "exit $rc: $(cat run.out run.err)"; fi

check run_json '
import json
m = {r["metric"]: r["value"] for r in json.load(open("run.json"))}
assert m["loadgen_records_acked"] == 1200 and m["loadgen_terminals"] == 4, m
assert m["loadgen_records_per_s"] > 0 and m["loadgen_exchanges_per_s"] > 0, m
for x in ("handshake", "hello", "records", "getconfig", "getdelta"):
    assert 0 < m["loadgen_%s_p50" % x] <= m["loadgen_%s_p99" % x] <= m["loadgen_%s_max" % x], (x, m)
for e in ("connect", "tls", "timeout", "refused", "backend", "protocol"):
    assert m["loadgen_errors_" + e] == 0, (e, m)
'

# 2. the backend holds exactly those records: 300 per terminal, seq 1..300 once each, with
# the mix's kinds; each terminal got a bundle, then a delta
"$CTL" backend records $DB --json > records.json 2> ctl.err &&
"$CTL" backend terminals $DB --json > terminals.json 2>> ctl.err ||
	bad backend_listings "$(cat ctl.err)"
check backend_holds_the_records '
import json, collections
recs = [json.loads(l) for l in open("records.json")]
seqs = collections.defaultdict(list)
for r in recs:
    seqs[r["terminal"]].append(r["seq"])
assert sorted(seqs) == ["LG-1", "LG-2", "LG-3", "LG-4"], sorted(seqs)
for t, s in seqs.items():
    assert sorted(s) == list(range(1, 301)), (t, len(s), len(set(s)))
kinds = collections.Counter((r["kind"], r["result"]) for r in recs)
assert kinds[("link", "requested")] > 0 and kinds[("tap", "refused")] > 0, kinds
assert kinds[("tap", "accepted")] > 600, kinds
terms = {r["terminal"]: r["acked"] for r in (json.loads(l) for l in open("terminals.json"))}
assert terms == {"LG-%d" % i: 300 for i in range(1, 5)}, terms
'
grep -q '^| bundles received  *| *4 |$' run.out && grep -q '^| deltas received  *| *4 |$' run.out &&
	ok bundle_and_delta_received || bad bundle_and_delta_received "$(grep received run.out)"

# 3. a closed port: connect errors, exit 1; --allow-errors: exit 0
"$LG" --backend "127.0.0.1:$FREE" --ca-cert ca.crt --ca-key ca.key --terminals 3 --records 10 \
	> closed.out 2> closed.err
rc=$?
"$LG" --backend "127.0.0.1:$FREE" --ca-cert ca.crt --ca-key ca.key --terminals 1 --records 10 \
	--allow-errors > allowed.out 2>&1
arc=$?
if [ $rc -eq 1 ] && [ "$(err_count closed.out connect)" = 3 ] && [ $arc -eq 0 ] &&
   grep -q "connect  *3  connect to 127.0.0.1:$FREE: Connection refused" closed.out &&
   [ "$(err_count allowed.out connect)" = 1 ]
then ok closed_port_counted; else bad closed_port_counted "exit $rc/$arc: $(cat closed.out closed.err)"; fi

# 4. terminals not registered: the backend's error, counted by kind with its reason; the
# backend stores nothing of theirs
"$LG" --backend "127.0.0.1:$PORT" --ca-cert ca.crt --ca-key ca.key --terminals 2 --records 10 \
	--prefix NR- > nr.out 2> nr.err
rc=$?
"$CTL" backend records $DB --json > records2.json 2> ctl.err
if [ $rc -eq 1 ] && [ "$(err_count nr.out backend)" = 2 ] &&
   grep -q "backend  *2  terminal ID is not registered at this backend" nr.out &&
   grep -q -- "--print-register" nr.err && ! grep -q '"NR-' records2.json &&
   [ "$(wc -l < records2.json)" = 1200 ]
then ok unregistered_counted; else bad unregistered_counted "exit $rc: $(cat nr.out nr.err)"; fi

# 5. a backend that stops answering: timeout errors within --timeout-ms, not a hang
kill -STOP "$BPID"
"$LG" --backend "127.0.0.1:$PORT" --ca-cert ca.crt --ca-key ca.key --terminals 2 --records 10 \
	--prefix ST- --timeout-ms 300 > st.out 2> st.err
rc=$?
kill -CONT "$BPID"
if [ $rc -eq 1 ] && [ "$(err_count st.out timeout)" = 2 ]
then ok stopped_backend_times_out; else bad stopped_backend_times_out "exit $rc: $(cat st.out st.err)"; fi

# 6. certificates from a folder, registered by the printed lines, a closed first address
mkdir certs
"$LG" --print-register $DB --terminals 2 --prefix FO- --operator OP-A > reg.sh 2> reg.err
for id in FO-1 FO-2; do
	"$CTL" terminal create --ca-key ca.key --ca-cert ca.crt --id $id --key certs/$id.key \
		--cert certs/$id.crt > /dev/null 2>> reg.err
done
PATH="$KP_BIN:$PATH" sh reg.sh >> reg.err 2>&1
"$LG" --backend "127.0.0.1:$FREE" --backend "127.0.0.1:$PORT" --ca-cert ca.crt --certs certs \
	--terminals 2 --prefix FO- --records 20 --config-every 0 > fo.out 2> fo.err
rc=$?
if [ $rc -eq 0 ] && [ "$(wc -l < reg.sh)" = 2 ] &&
   grep -q '^kippuctl backend terminal add backend.db FO-1 --operator OP-A$' reg.sh &&
   grep -q '^| terminals that sent all  *| *2 of *2 |$' fo.out &&
   grep -q '^| getconfig  *| *0 |' fo.out && grep -q '^| getdelta  *| *0 |' fo.out
then ok certs_folder_and_failover; else bad certs_folder_and_failover "exit $rc: $(cat reg.sh reg.err fo.out fo.err)"; fi

# 7. bounded by --duration at a tap rate: the run ends with records left unsent
"$LG" --backend "127.0.0.1:$PORT" --ca-cert ca.crt --ca-key ca.key --register $DB \
	--terminals 2 --prefix DU- --records 500 --rate 20 --duration 1 --config-every 0 \
	--json du.json > du.out 2> du.err
rc=$?
check bounded_by_duration "
import json
m = {r['metric']: r['value'] for r in json.load(open('du.json'))}
assert $rc == 0, 'exit $rc'
assert m['loadgen_records_acked'] < 1000 and m['loadgen_errors_timeout'] == 0, m
"

# 8. bad arguments: exit 2, a clear message, nothing on stdout
miss=""
refused() { # WHAT ARGS...
	what=$1; shift
	"$LG" "$@" > bad.out 2> bad.err; rc=$?
	if [ $rc -ne 2 ] || [ -s bad.out ] || ! grep -q -- "^kippu-loadgen: .*$what" bad.err; then
		miss="$miss [$*: exit $rc: $(head -n 1 bad.err)]"
	fi
}
A="--backend 127.0.0.1:$PORT --ca-cert ca.crt --ca-key ca.key"
# shellcheck disable=SC2086 # $A is several arguments
{
refused "--terminals must be 1 to 2000" $A --terminals 0
refused "--records must be" $A --records -3
refused "--rate wants taps per second" $A --rate -1
refused "--rate wants taps per second" $A --rate fast
refused "'melt' is no record kind" $A --mix melt=3
refused "at least one record kind" $A --mix ride=0
refused "ride wants a whole number" $A --mix ride=x
refused "--backend wants HOST:PORT, not 'nocolon'" --backend nocolon --ca-cert ca.crt --ca-key ca.key
refused "the port must be 1 to 65535" --backend 127.0.0.1:0 --ca-cert ca.crt --ca-key ca.key
refused "the port must be 1 to 65535" --backend 127.0.0.1:99999 --ca-cert ca.crt --ca-key ca.key
refused "--backend HOST:PORT is required" --ca-cert ca.crt --ca-key ca.key
refused "--ca-cert is required" --backend 127.0.0.1:1 --ca-key ca.key
refused "give one of --ca-key" $A --certs certs
refused "give one of --ca-key" --backend 127.0.0.1:1 --ca-cert ca.crt
refused "--prefix 'a b': terminal ids" $A --prefix "a b"
refused "terminal ids (.*) are 1-32" $A --prefix 01234567890123456789012345678901
refused "--json and --json-append" $A --json a --json-append b
refused "--duration must be" $A --duration 0
refused "--timeout-ms must be" $A --timeout-ms 5
refused "unexpected argument 'extra'" $A extra
refused "cannot read --ca-key" --backend 127.0.0.1:1 --ca-cert ca.crt --ca-key nosuch.key
refused "unrecognized option" $A --no-such
refused "requires an argument" $A --records
}
[ -z "$miss" ] && ok bad_arguments_refused || bad bad_arguments_refused "$miss"

finish "kippu-loadgen"
