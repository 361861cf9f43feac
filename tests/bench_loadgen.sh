#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# make bench, the load generator's step: a real kippu-backend process (SQLite, a fresh
# folder, removed after) and kippu-loadgen with 50 terminals x 2,048 records each (8 full
# batches, a bundle fetch every 4 and at the end: getconfig, then getdelta), both on this
# machine; prints kippu-loadgen's table, then checks that the backend holds every record
# (kippuctl backend terminals).
# usage: bench_loadgen.sh DIR [JSON]   (KP_BIN: the programs; JSON: add the figures to
# that array, as make bench BENCH_JSON=... does; TERMINALS, RECORDS change the sizes)
KP_BIN=$(cd "${KP_BIN:-build/bin}" && pwd) || exit 1
DIR=${1:?usage: bench_loadgen.sh DIR [JSON]}
JSON=${2:-}
TERMINALS=${TERMINALS:-50}
RECORDS=${RECORDS:-2048}
BPID=""
case "$JSON" in ''|/*) ;; *) JSON="$(pwd)/$JSON" ;; esac
case "$DIR" in /*) ;; *) DIR="$(pwd)/$DIR" ;; esac
# stop_backend: SIGTERM, then at most 20 s for it to end; SIGKILL (and say so) after that
stop_backend() {
	[ -n "$BPID" ] || return 0
	kill "$BPID" 2>/dev/null
	n=0
	while kill -0 "$BPID" 2>/dev/null && [ $n -lt 400 ]; do sleep 0.05; n=$((n + 1)); done
	if kill -0 "$BPID" 2>/dev/null; then
		say "kippu-backend did not stop within 20 s of SIGTERM: killed"
		kill -9 "$BPID" 2>/dev/null
	fi
	wait "$BPID" 2>/dev/null
	BPID=""
}
cleanup() {
	stop_backend
	rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
say() { echo "bench-loadgen: $*" >&2; }

rm -rf "$DIR" && mkdir -p "$DIR" && cd "$DIR" || exit 1
{
	"$KP_BIN/kippuctl" ca create --key ca.key --cert ca.crt &&
	"$KP_BIN/kippuctl" backend create --ca-key ca.key --ca-cert ca.crt --key backend.key \
		--cert backend.crt &&
	"$KP_BIN/kippuctl" backend operator backend.db OP-A "Bus A"
} > setup.log 2>&1 || { cat setup.log >&2; exit 1; }
"$KP_BIN/kippu-backend" --listen 127.0.0.1:0 --db backend.db --ca ca.crt --cert backend.crt \
	--key backend.key --max-conns $((TERMINALS + 16)) > backend.out 2> backend.log &
BPID=$!
# until it listens (at most 60 s), by its line
end=$(($(date +%s) + 60))
until grep -q 'listening on' backend.out 2>/dev/null; do
	if [ "$(date +%s)" -gt "$end" ] || ! kill -0 "$BPID" 2>/dev/null; then
		say "kippu-backend did not start: $(cat backend.log)"
		exit 1
	fi
	sleep 0.05
done
PORT=$(sed -n 's/^kippu-backend: listening on 127.0.0.1:\([0-9]*\)$/\1/p' backend.out)
say "kippu-backend (pid $BPID) on 127.0.0.1:$PORT; $TERMINALS terminals x $RECORDS records"
"$KP_BIN/kippu-loadgen" --backend "127.0.0.1:$PORT" --ca-cert ca.crt --ca-key ca.key \
	--register backend.db --terminals "$TERMINALS" --records "$RECORDS" --timeout-ms 60000 \
	${JSON:+--json-append "$JSON"} || exit 1
held=$("$KP_BIN/kippuctl" backend terminals backend.db --json |
	sed -n 's/.*"acked": *\([0-9]*\).*/\1/p' | awk '{ s += $1 } END { print s + 0 }')
if [ "$held" -ne $((TERMINALS * RECORDS)) ]; then
	say "the backend holds $held records, expected $((TERMINALS * RECORDS))"
	exit 1
fi
echo "the backend holds all $held records (kippuctl backend terminals)"
