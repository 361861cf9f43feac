#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Runs every test program given (a *.sh with sh), shows cmocka's output, and ends with one
# line, alone and last: "N passed, N failed, N skipped", summed over all of them.
# - Each program runs under a time limit, KP_TEST_TIMEOUT seconds (600): one that does not
#   finish in time is killed, named, and counted as a failure; so is one that crashes or
#   exits before cmocka could report, or that ran no test at all.
# - The suite runs where `make deps` ran, so nothing may be skipped: a skipped test fails
#   the run (its name is printed) unless KP_ALLOW_SKIP=1.
# - After the summary of failures, the ten slowest programs with their wall time, so that the
#   CI budget (.ci/run under 25 minutes) can be watched.
# Exit status: 0 only if nothing failed (and nothing was skipped, without KP_ALLOW_SKIP=1).
limit=${KP_TEST_TIMEOUT:-600}
case "$limit" in
'' | *[!0-9]* | 0) echo "run.sh: KP_TEST_TIMEOUT must be a number of seconds, not '$limit'" >&2; exit 2 ;;
esac
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kippu-run.XXXXXX") || exit 2
pid=""
trap 'rm -rf "$tmp"' EXIT
# An interrupted run stops the program running (timeout passes the signal to its group).
trap '[ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null; exit 130' INT TERM

# count TAG: the sum of N over cmocka's summary lines "TAG N test(s)..." in the output.
count() {
	awk -v tag="$1 " 'index($0, tag) == 1 { s += substr($0, length(tag) + 1) + 0 }
		END { print s + 0 }' "$tmp/out"
}
# names TAG PROGRAM: "PROGRAM:test" for each line of a "TAG N test(s), listed below:" list.
names() {
	awk -v tag="$1 " -v prog="$2" '
		index($0, tag) == 1 && / test\(s\), listed below:$/ { list = 1; next }
		list && index($0, tag) == 1 { printf " %s:%s", prog, substr($0, length(tag) + 1); next }
		{ list = 0 }' "$tmp/out"
}

passed=0; failed=0; skipped=0; unfinished=""; failures=""; skips=""
: > "$tmp/times"
for t in "$@"; do
	name=$(basename "$t")
	t0=$(date +%s%N)
	# In the background, so that an interrupt reaches the trap at once.
	timeout -k 10 "$limit" sh -c 'case "$1" in *.sh) exec sh "$1" ;; *) exec "$1" ;; esac' \
		sh "$t" > "$tmp/out" 2>&1 &
	pid=$!
	wait "$pid"
	rc=$?
	pid=""
	echo "$(( ($(date +%s%N) - t0) / 1000000 )) $name" >> "$tmp/times"
	cat "$tmp/out"
	p=$(count "[  PASSED  ]"); f=$(count "[  FAILED  ]"); s=$(count "[  SKIPPED ]")
	passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
	failures="$failures$(names "[  FAILED  ]" "$name")"
	skips="$skips$(names "[  SKIPPED ]" "$name")"
	why=""
	if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
		why="timed out after $limit s"
	elif [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		why="rc=$rc"                                # crashed or exited before cmocka reported
	elif [ "$rc" -eq 0 ] && [ $((p + f + s)) -eq 0 ]; then
		why="reported no tests"
	fi
	if [ -n "$why" ]; then
		failed=$((failed + 1)); unfinished="$unfinished, $name ($why)"
	fi
done
[ -n "$unfinished" ] && echo "tests that did not finish: ${unfinished#, }"
[ -n "$failures" ] && echo "tests that failed:$failures"
echo "slowest:$(sort -rn "$tmp/times" | head -n 10 | awk '{ printf " %s %.1fs", $2, $1 / 1000 }')"
bad=$failed
if [ "$skipped" -gt 0 ]; then
	if [ "${KP_ALLOW_SKIP:-0}" = 1 ]; then
		echo "tests that skipped (allowed by KP_ALLOW_SKIP=1):$skips"
	else
		echo "tests that skipped (a failure where make deps ran; KP_ALLOW_SKIP=1 allows it):$skips"
		bad=$((bad + skipped))
	fi
fi
echo "$passed passed, $failed failed, $skipped skipped"
[ "$bad" -eq 0 ]
