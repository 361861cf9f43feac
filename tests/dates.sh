#!/bin/sh
# make test-dates: the demo and the date-sensitive test programs at dates years apart, each in
# another time zone, under faketime (libfaketime). Nothing in them may depend on today's date:
# every validity window comes from the clock a test or a scenario sets. The demo's results
# (tests/demo_results.sh) must equal tests/data/demo-results.txt at every date.
# Usage: KP_BIN=build/bin KP_TESTS=build/tests sh tests/dates.sh TEST_PROGRAM...
# Ends with "test-dates: N passed, N failed"; exit status non-zero if anything failed.
set -u
KP_BIN=${KP_BIN:-build/bin}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(mktemp -d "${TMPDIR:-/tmp}/kippu-dates.XXXXXX")
trap 'rm -rf "$OUT"' EXIT
command -v faketime >/dev/null || { echo "test-dates: faketime is missing (make deps)"; exit 1; }

passed=0; failed=0; failures=""
# TZ and the instant (UTC); the time zones put each date on another local day or hour.
for spec in "Asia/Tokyo|2027-03-01 00:00:00" "UTC|2030-12-31 23:59:30" \
            "America/Los_Angeles|2036-02-29 12:00:00"; do
	tz=${spec%%|*}; at=${spec#*|}
	# An offset (not a start time) so that every process, child or not, sees one clock.
	fake() {
		off=$(( $(date -u -d "$at UTC" +%s) - $(date -u +%s) ))
		# libfaketime is preloaded before ASan's runtime (make test-dates SANITIZE=1)
		TZ=$tz FAKETIME_DONT_FAKE_MONOTONIC=1 \
		ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0" \
		faketime -f "+${off}s" "$@"
	}
	label="$(TZ=$tz date -d "$at UTC" '+%Y-%m-%d %H:%M:%S %Z') ($at UTC)"
	echo "== $label"
	fake sh "$HERE/run.sh" "$@" > "$OUT/tests.log" 2>&1
	rc=$?
	last=$(tail -n 1 "$OUT/tests.log")
	p=$(echo "$last" | sed -n 's/^\([0-9]*\) passed, .*/\1/p')
	f=$(echo "$last" | sed -n 's/^[0-9]* passed, \([0-9]*\) failed.*/\1/p')
	passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
	if [ $rc -ne 0 ]; then
		[ "${f:-0}" -gt 0 ] || failed=$((failed + 1))
		failures="$failures tests@$at"
		grep -E '^\[  FAILED  \]|did not finish|skipped|^\[   LINE   \]' "$OUT/tests.log" | sed 's/^/   /'
	fi
	echo "   tests: $last"
	if fake env KP_BIN="$KP_BIN" sh "$HERE/../tools/demo.sh" > "$OUT/demo.log" 2>&1 &&
	   sh "$HERE/demo_results.sh" < "$OUT/demo.log" > "$OUT/results.txt" &&
	   diff -u "$HERE/data/demo-results.txt" "$OUT/results.txt" > "$OUT/demo.diff"; then
		passed=$((passed + 1)); echo "   demo: the README's results"
	else
		failed=$((failed + 1)); failures="$failures demo@$at"
		echo "   demo: results differ (or it failed):"
		if [ -s "$OUT/demo.diff" ]; then sed 's/^/   | /' "$OUT/demo.diff"; else tail -n 20 "$OUT/demo.log" | sed 's/^/   | /'; fi
	fi
done
[ -n "$failures" ] && echo "failed at:$failures"
echo "test-dates: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
