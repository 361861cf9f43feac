#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# README's "Running the backend by hand" runs as written: the test takes the first ```sh block
# after that heading from README.md itself and runs it with sh, unchanged, from a folder whose
# build/bin is the programs under test (KP_BIN) and with TMPDIR inside the test's own folder
# (so the block's `mktemp -d` lands there and is removed after). It then checks what the block
# printed: the tap accepted on the terminal, the record at the backend, the ledger, a clean stop.
# Prints cmocka-style lines so tests/run.sh counts it.
KP_BIN=${KP_BIN:-build/bin}
HERE=$(cd "$(dirname "$0")/../.." && pwd)
BIN=$(cd "$KP_BIN" && pwd)
T=$(mktemp -d "${TMPDIR:-/tmp}/kippu-readme.XXXXXX")
trap 'pkill -f "$T/project/" 2>/dev/null; rm -rf "$T"' EXIT INT TERM
. "$(dirname "$0")/../shtest.sh"    # ok, bad, finish (the lines run.sh counts)

echo "[==========] Running 4 test(s)."
awk '/^## Running the backend by hand$/ { sec = 1; next }
     sec && /^## / { exit }
     sec && !blk && /^```sh$/ { blk = 1; next }
     blk && /^```$/ { exit }
     blk { print }' "$HERE/README.md" > "$T/block.sh"
if [ "$(wc -l < "$T/block.sh")" -gt 10 ] && grep -q 'kippu-backend --listen' "$T/block.sh"; then
	ok block_found
else
	bad block_found "no sh block under '## Running the backend by hand' in README.md"
fi
mkdir -p "$T/project/build" "$T/tmp"
ln -s "$BIN" "$T/project/build/bin"
if (cd "$T/project" && TMPDIR="$T/tmp" timeout 120 sh -e "$T/block.sh") > "$T/out" 2> "$T/err"; then
	ok block_runs
else
	bad block_runs "exit $?; stderr:"; cat "$T/err"; tail -n 20 "$T/out"
fi
# The tap was accepted on the terminal, then uploaded: the backend's records and ledger show it.
if grep -q '^show .* accepted ok P10 9 ' "$T/out" &&
   grep -Eq '^BUS-A-01 +1 +2026-11-25T23:00:00Z +accepted +ok +OP-A +P10 ' "$T/out"; then
	ok tap_reaches_backend
else
	bad tap_reaches_backend "no accepted tap of BUS-A-01 in the backend's records:"; cat "$T/out"
fi
if grep -Eq '^OP-A +1 +0 +0 +1 ' "$T/out" && grep -q 'sent 1 records, backend holds up to 1' "$T/err" &&
   grep -q 'kippu-backend: stopping' "$T/err"; then
	ok ledger_and_clean_stop
else
	bad ledger_and_clean_stop "ledger or stop missing:"; cat "$T/out" "$T/err"
fi

finish "the README backend block"
