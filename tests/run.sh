#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Runs every test program given (a *.sh with sh), shows cmocka's output, and ends with one
# line, alone and last: "N passed, N failed, N skipped", summed over all of them.
# - Each program runs under a time limit, KP_TEST_TIMEOUT seconds (600): one that does not
#   finish in time is killed, named, and counted as a failure; so is one that crashes or
#   exits before cmocka could report, or that ran no test at all.
# - The suite runs where `make deps` ran, so nothing may be skipped: a skipped test fails
#   the run (its name is printed) unless KP_ALLOW_SKIP=1.
# - KP_TEST_JOBS (1) programs run at once; each one's output is shown whole when it ends.
# - After the summary of failures, the ten slowest programs with their wall time, so that the
#   CI budget (.ci/run under 25 minutes) can be watched.
# Exit status: 0 only if nothing failed (and nothing was skipped, without KP_ALLOW_SKIP=1).
limit=${KP_TEST_TIMEOUT:-600}
case "$limit" in
'' | *[!0-9]* | 0) echo "run.sh: KP_TEST_TIMEOUT must be a number of seconds, not '$limit'" >&2; exit 2 ;;
esac
jobs=${KP_TEST_JOBS:-1}
case "$jobs" in
'' | *[!0-9]* | 0) echo "run.sh: KP_TEST_JOBS must be a number of programs at once, not '$jobs'" >&2; exit 2 ;;
esac

# run.sh --one DIR I PROGRAM: runs one program into DIR/out.I, DIR/rc.I and DIR/ms.I, then
# shows its output whole (one program's output at a time, whatever ends first).
if [ "${1:-}" = --one ]; then
	d=$2; i=$3; t=$4
	t0=$(date +%s%N)
	timeout -k 10 "$limit" sh -c 'case "$1" in *.sh) exec sh "$1" ;; *) exec "$1" ;; esac' \
		sh "$t" > "$d/out.$i" 2>&1
	echo $? > "$d/rc.$i"
	echo $(( ($(date +%s%N) - t0) / 1000000 )) > "$d/ms.$i"
	flock "$d/lock" cat "$d/out.$i"
	exit 0
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/kippu-run.XXXXXX") || exit 2
pid=""
trap 'rm -rf "$tmp"' EXIT
# An interrupted run stops the programs running (timeout passes the signal to its group).
trap '[ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null; exit 130' INT TERM

# count TAG FILE: the sum of N over cmocka's summary lines "TAG N test(s)..." in FILE.
count() {
	awk -v tag="$1 " 'index($0, tag) == 1 { s += substr($0, length(tag) + 1) + 0 }
		END { print s + 0 }' "$2"
}
# names TAG PROGRAM FILE: "PROGRAM:test" for each line of a "TAG N test(s), listed below:" list.
names() {
	awk -v tag="$1 " -v prog="$2" '
		index($0, tag) == 1 && / test\(s\), listed below:$/ { list = 1; next }
		list && index($0, tag) == 1 { printf " %s:%s", prog, substr($0, length(tag) + 1); next }
		{ list = 0 }' "$3"
}

# KP_TEST_JOBS programs at once (xargs -P), in the order given; in the background, so that
# an interrupt reaches the trap at once.
self=$0
n=0
for t in "$@"; do n=$((n + 1)); printf '%s\0%s\0' "$n" "$t"; done |
	xargs -0 -r -n 2 -P "$jobs" sh "$self" --one "$tmp" &
pid=$!
wait "$pid"
pid=""

passed=0; failed=0; skipped=0; unfinished=""; failures=""; skips=""
: > "$tmp/times"
i=0
for t in "$@"; do
	i=$((i + 1))
	name=$(basename "$t")
	out="$tmp/out.$i"
	[ -f "$out" ] || : > "$out"
	rc=$(cat "$tmp/rc.$i" 2>/dev/null || echo 255)
	echo "$(cat "$tmp/ms.$i" 2>/dev/null || echo 0) $name" >> "$tmp/times"
	p=$(count "[  PASSED  ]" "$out"); f=$(count "[  FAILED  ]" "$out"); s=$(count "[  SKIPPED ]" "$out")
	passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
	failures="$failures$(names "[  FAILED  ]" "$name" "$out")"
	skips="$skips$(names "[  SKIPPED ]" "$name" "$out")"
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
