#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
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

# one_date DIR TZ AT TEST...: the tests and the demo with the clock at AT (UTC) in time zone
# TZ; DIR/report is what to print, DIR/counts "passed failed".
one_date() {
	d=$1; tz=$2; at=$3; shift 3
	mkdir -p "$d"
	# An offset (not a start time) so that every process, child or not, sees one clock.
	fake() {
		off=$(( $(date -u -d "$at UTC" +%s) - $(date -u +%s) ))
		# libfaketime is preloaded before ASan's runtime (make test-dates SANITIZE=1)
		TZ=$tz FAKETIME_DONT_FAKE_MONOTONIC=1 \
		ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0" \
		faketime -f "+${off}s" "$@"
	}
	p=0; f=0
	{
		echo "== $(TZ=$tz date -d "$at UTC" '+%Y-%m-%d %H:%M:%S %Z') ($at UTC)"
		fake sh "$HERE/run.sh" "$@" > "$d/tests.log" 2>&1
		rc=$?
		last=$(tail -n 1 "$d/tests.log")
		p=$(echo "$last" | sed -n 's/^\([0-9]*\) passed, .*/\1/p'); p=${p:-0}
		f=$(echo "$last" | sed -n 's/^[0-9]* passed, \([0-9]*\) failed.*/\1/p'); f=${f:-0}
		if [ $rc -ne 0 ]; then
			[ "$f" -gt 0 ] || f=$((f + 1))
			grep -E '^\[  FAILED  \]|did not finish|skipped|^\[   LINE   \]' "$d/tests.log" |
				sed 's/^/   /'
		fi
		echo "   tests: $last"
		if fake env KP_BIN="$KP_BIN" sh "$HERE/../tools/demo.sh" > "$d/demo.log" 2>&1 &&
		   sh "$HERE/demo_results.sh" < "$d/demo.log" > "$d/results.txt" &&
		   diff -u "$HERE/data/demo-results.txt" "$d/results.txt" > "$d/demo.diff"; then
			p=$((p + 1)); echo "   demo: the README's results"
		else
			f=$((f + 1))
			echo "   demo: results differ (or it failed):"
			if [ -s "$d/demo.diff" ]; then sed 's/^/   | /' "$d/demo.diff"
			else tail -n 20 "$d/demo.log" | sed 's/^/   | /'; fi
		fi
	} > "$d/report"
	echo "$p $f" > "$d/counts"
}

# TZ and the instant (UTC); the time zones put each date on another local day or hour. The
# three dates run side by side (most of the time is spent waiting on real-time scenarios);
# KP_DATES_SERIAL=1 runs them one after the other.
n=0; pids=""
for spec in "Asia/Tokyo|2027-03-01 00:00:00" "UTC|2030-12-31 23:59:30" \
            "America/Los_Angeles|2036-02-29 12:00:00"; do
	n=$((n + 1))
	if [ "${KP_DATES_SERIAL:-0}" = 1 ]; then
		one_date "$OUT/$n" "${spec%%|*}" "${spec#*|}" "$@"
	else
		one_date "$OUT/$n" "${spec%%|*}" "${spec#*|}" "$@" &
		pids="$pids $!"
	fi
done
for pid in $pids; do wait "$pid"; done
passed=0; failed=0
for i in $(seq 1 $n); do
	cat "$OUT/$i/report" 2>/dev/null || echo "== date $i: no report"
	read -r p f < "$OUT/$i/counts" 2>/dev/null || { p=0; f=1; }
	passed=$((passed + p)); failed=$((failed + f))
done
echo "test-dates: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
