# SPDX-License-Identifier: Apache-2.0
# Runs each libFuzzer target for SECONDS (make fuzz): sh tests/fuzz/run.sh BUILD SECONDS BIN...
# Seeds: tests/fuzz/corpus/<target>/ (read only); what the run finds goes to
# BUILD/fuzz/corpus/<target>/ and the log to BUILD/fuzz/log/<target>.log. A dictionary
# tests/fuzz/<target>.dict is used when present; the -max_len of each target is below.
# Fails when any target reports a crash, leak, timeout, out-of-memory or sanitizer error,
# naming the target and the reproducer (BUILD/fuzz/artifacts/<target>-crash-...).
set -u
build=$1 seconds=$2
shift 2
out=$build/fuzz
mkdir -p "$out/log" "$out/artifacts"
failed=0
for bin in "$@"; do
	t=${bin##*/}
	case $t in
	fuzz_gtfs | fuzz_load | fuzz_scenario | fuzz_config) max_len=8192 ;;
	fuzz_bundle | fuzz_msg) max_len=16384 ;;
	fuzz_card) max_len=6000 ;;
	*) max_len=4096 ;;
	esac
	seeds=tests/fuzz/corpus/$t
	mkdir -p "$out/corpus/$t" "$seeds"
	dict=""
	[ -f "tests/fuzz/$t.dict" ] && dict="-dict=tests/fuzz/$t.dict"
	log=$out/log/$t.log
	# -timeout: one input may take 10 s (a slow machine under ASan); -rss_limit_mb: 2 GiB.
	"$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=$max_len \
	  -print_final_stats=1 -artifact_prefix="$out/artifacts/$t-" $dict \
	  "$out/corpus/$t" "$seeds" > "$log" 2>&1
	rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
	cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | sed 's/cov: //')
	if [ $rc -ne 0 ]; then
		failed=1
		art=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
		echo "FAIL $t (exit $rc): reproducer ${art:-none written}; log $log"
		grep -m 3 -E 'ERROR: |runtime error|SUMMARY' "$log" | sed 's/^/    /'
		echo "    replay: $bin ${art:-<input>}"
	else
		printf 'ok   %-16s %10s runs  cov %6s  (%s s)\n' "$t" "${execs:-?}" "${cov:-?}" "$seconds"
	fi
done
exit $failed
