#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# No raw card id anywhere: the whole demo (three terminals, the backend, My Number cards, link
# mode, exports) is run into a folder of its own, and tests/no_card_ids.py searches every
# database, log, HMI log and export it wrote for every card's IDm, PUPI, certificate serial
# (as bytes and as hex in both cases) and certificate subject. Then the search is shown to
# bite: each form of an id planted in one output file is found.
# Prints cmocka-style lines so tests/run.sh counts it. Needs python3 and openssl (make deps).
KP_BIN=${KP_BIN:-build/bin}
HERE=$(cd "$(dirname "$0")/.." && pwd)
T=$(mktemp -d "${TMPDIR:-/tmp}/kippu-ids.XXXXXX")
trap 'rm -rf "$T"' EXIT INT TERM
. "$(dirname "$0")/../shtest.sh"    # ok, bad, finish (the lines run.sh counts)
scan() { python3 "$HERE/no_card_ids.py" "$@" > "$T/scan.out" 2>&1; }

echo "[==========] Running 3 test(s)."
if KP_BIN=$KP_BIN DEMO_DIR="$T/demo" sh "$HERE/../tools/demo.sh" > "$T/demo.out" 2>&1; then
	ok demo_runs
else
	bad demo_runs "make demo failed:"; tail -n 20 "$T/demo.out"
fi
if scan "$T/demo" && grep -q ': 0 found$' "$T/scan.out" &&
   grep -Eq ': (9|[1-9][0-9]) cards. ids and 2 subjects searched in [1-9][0-9] files' "$T/scan.out"; then
	ok demo_holds_no_card_id
else
	bad demo_holds_no_card_id "$(cat "$T/scan.out")"
fi
# The search bites: alice's IDm as bytes, lower and upper hex; frank's PUPI; hanako's serial
# and subject, each planted in turn in one log.
log="$T/demo/BUS-A-01.log"
cp "$log" "$T/log.orig"
serial=$(openssl x509 -inform DER -in "$T/demo/hanako-card/auth.der" -noout -serial | cut -d= -f2)
missed=""
for plant in '\001\001\002\003\004\005\006\007' 0101020304050607 A1B2C3D4 a1b2c3d4 "$serial" \
             "$(echo "$serial" | tr A-F a-f)" "JPKI test card 7305100100001001"; do
	cp "$T/log.orig" "$log"
	printf "x $plant x\n" >> "$log"
	scan "$T/demo"
	[ $? = 1 ] && grep -q 'BUS-A-01.log holds' "$T/scan.out" || missed="$missed $plant"
done
cp "$T/log.orig" "$log"
[ -z "$missed" ] && ok search_finds_planted_ids || bad search_finds_planted_ids "missed:$missed"

finish "no card ids"
