#!/bin/sh
# make demo: provisions an operator CA, a terminal and its keys, loads products and
# entitlements, runs kippu-terminal over a mock scenario (21 taps by 7 cards, faults
# included), then audits the signed journal with kippuctl and with an independent
# COSE/ECDSA checker (Python standard library + openssl). DEMO_DIR keeps everything.
set -eu
BIN=$(cd "${KP_BIN:-build/bin}" && pwd)
SRC=$(cd "$(dirname "$0")" && pwd)
if [ -n "${DEMO_DIR:-}" ]; then
	mkdir -p "$DEMO_DIR"
	DIR=$(cd "$DEMO_DIR" && pwd)
	if [ -e "$DIR/terminal.db" ] || [ -e "$DIR/ca.key" ]; then
		echo "demo: $DIR already holds a demo; choose an empty DEMO_DIR" >&2
		exit 1
	fi
	KEEP=1
else
	DIR=$(mktemp -d "${TMPDIR:-/tmp}/kippu-demo-XXXXXX")
	KEEP=0
fi
cleanup() { [ "$KEEP" = 1 ] || rm -rf "$DIR"; }
trap cleanup EXIT
cd "$DIR"
cp "$SRC/demo/scenario.txt" "$SRC/demo/load.txt" "$SRC/demo/terminal.conf" .

step() { printf '\n== %s\n' "$*"; }

step "1. Operator CA, terminal key and certificate, card token key (keys are mode 0600)"
"$BIN/kippuctl" ca create --key ca.key --cert ca.crt --cn "Kansai Demo Operator CA"
"$BIN/kippuctl" terminal create --ca-key ca.key --ca-cert ca.crt --id BUS-OPA-0042 \
	--key terminal.key --cert terminal.crt
"$BIN/kippuctl" token-key create token.key

step "2. Operators, products, entitlements and the denylist into the terminal's store"
"$BIN/kippuctl" load terminal.db load.txt --token-key token.key

step "3. kippu-terminal on a mock reader: what the rider sees (mock HMI)"
"$BIN/kippu-terminal" --config terminal.conf --hmi mock:- 2>terminal.log >hmi.log
# hmi.log lines: show TIME_MS RESULT REASON PRODUCT RIDES_LEFT TEXT...
grep '^show' hmi.log | while read -r _ ms result reason product left text; do
	printf '  %s  %-8s %-16s %s\n' "$(TZ=Asia/Tokyo date -d "@$((ms / 1000))" +%H:%M:%S)" \
		"$result" "$reason" "$text"
done
echo "  (terminal log: $(tail -n 1 terminal.log))"

step "4. The journal: one signed record per decision"
"$BIN/kippuctl" journal list terminal.db

step "5. Verify signatures, sequence and hash chain; the terminal certificate against the CA"
"$BIN/kippuctl" journal verify terminal.db --ca ca.crt

step "6. Export as COSE_Sign1 files and check them with an independent implementation"
"$BIN/kippuctl" journal export terminal.db export
python3 "$SRC/cose_verify.py" export

step "done"
if [ "$KEEP" = 1 ]; then
	echo "Everything the demo made is in $DIR (keys, certificates, terminal.db, logs, export/)."
else
	echo "Run 'make demo DEMO_DIR=path' to keep the keys, database, logs and export."
fi
