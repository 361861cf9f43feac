#!/bin/sh
# Runs every test program given, shows cmocka's output, and ends with one line
# "N passed, N failed" summed over all of them. Exit status is non-zero if any failed.
passed=0; failed=0; broken=""
for t in "$@"; do
	case "$t" in
	*.sh) out=$(sh "$t" 2>&1); rc=$? ;;      # shell tests print cmocka's summary lines
	*) out=$("$t" 2>&1); rc=$? ;;
	esac
	printf '%s\n' "$out"
	p=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test(s)\./\1/p' | awk '{s+=$1} END {print s+0}')
	f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test(s), listed below:/\1/p' | awk '{s+=$1} END {print s+0}')
	passed=$((passed + p)); failed=$((failed + f))
	if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then
		# crashed or exited before cmocka could report: count it as one failure
		failed=$((failed + 1)); broken="$broken $(basename "$t")(rc=$rc)"
	fi
done
[ -n "$broken" ] && echo "tests that did not finish:$broken"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
