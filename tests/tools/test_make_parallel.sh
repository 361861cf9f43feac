#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# `make` builds in parallel on the machine's cores by default, and a -j the user gives wins.
# The project's Makefile is read with one extra rule (from stdin) that prints the MAKEFLAGS
# make runs with. Prints cmocka-style lines so tests/run.sh counts it.
HERE=$(cd "$(dirname "$0")/../.." && pwd)
. "$(dirname "$0")/../shtest.sh"    # ok, bad, finish (the lines run.sh counts)
flags() {
	printf 'kp-print-makeflags:\n\t@echo "$(MAKEFLAGS)"\n' |
		env -u MAKEFLAGS -u MAKELEVEL -u MFLAGS make --no-print-directory -C "$HERE" -f Makefile -f - "$@" kp-print-makeflags
}
echo "[==========] Running 2 test(s)."
n=$(nproc)
got=$(flags)
case " $got " in
*" -j$n "*) ok parallel_by_default ;;
*) bad parallel_by_default "expected -j$n in MAKEFLAGS, make ran with '$got'" ;;
esac
got=$(flags -j1)
case " $got " in
*" -j1 "*) ok user_j_wins ;;
*) bad user_j_wins "make -j1 ran with '$got'" ;;
esac
finish "make in parallel"
