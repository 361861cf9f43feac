# SPDX-License-Identifier: Apache-2.0
# Sourced by every shell test (tests/*/test_*.sh): the
# cmocka-style lines tests/run.sh counts, and make without the calling make's flags.
passed=0; failed=0; failures=""
ok()  { passed=$((passed + 1)); echo "[       OK ] $1"; }
bad() { failed=$((failed + 1)); failures="$failures $1"; echo "[  FAILED  ] $1: $2"; }
# finish TITLE: the summary; exit 1 if anything failed.
finish() {
	echo "[==========] $1: $((passed + failed)) test(s) run."
	echo "[  PASSED  ] $passed test(s)."
	if [ $failed -gt 0 ]; then
		echo "[  FAILED  ] $failed test(s), listed below:"
		for f in $failures; do echo "[  FAILED  ] $f"; done
		exit 1
	fi
	exit 0
}
# kmake ARGS...: make in the tree, without the flags and variables of the make running the
# suite (`make check SANITIZE=1` must not reach the make a test runs).
kmake() { env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u MAKEOVERRIDES make -C "$TOP" "$@"; }
