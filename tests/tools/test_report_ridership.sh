#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# kippuctl report ridership as an operator runs it (README, "Ridership analytics"): a run over
# a backend database with a GTFS-JP feed writes the figures and the TIDES files and leaves the
# database as it was; bad arguments (dates, k, missing files) are refused with a clear error,
# nothing on stdout, and a database that is not there is never created. The measures
# themselves are test_ridership's.
# Prints cmocka-style lines so tests/run.sh counts it.
KP_BIN=${KP_BIN:-build/bin}
KP_BIN=$(cd "$KP_BIN" && pwd)
K=$KP_BIN/kippuctl
HERE=$(cd "$(dirname "$0")/.." && pwd)
GTFS=${KP_GTFS_DIR:-$HERE/../../shared/data/gtfs}
T=$(mktemp -d "${TMPDIR:-/tmp}/kippu-ridership.XXXXXX")
trap 'rm -rf "$T"' EXIT INT TERM
cd "$T" || exit 1
. "$HERE/shtest.sh"    # ok, bad, finish (the lines run.sh counts)
run() { "$@" > out 2> err; rc=$?; }
# expect NAME RC STDERR_LINE CMD...: the exit code, stderr's first line exactly that, stdout
# empty.
expect() {
	name=$1; want_rc=$2; want_err=$3; shift 3
	run "$@"
	# a value getopt's table refuses is followed by the usage, as in every command
	if [ "$rc" = "$want_rc" ] && [ "$(head -1 err)" = "$want_err" ] && [ ! -s out ]; then
		ok "$name"
		return 0
	fi
	bad "$name" "$* -> rc $rc, stderr '$(cat err)', stdout '$(head -c 200 out)'"
	return 1
}

echo "[==========] Running tests."
"$K" backend operator backend.db OP-A "Bus A" > /dev/null || exit 1
head -c 32 /dev/urandom > secret
printf 'short' > short
R="report ridership backend.db --secret secret"

before=$(sha256sum backend.db)
run "$K" $R --from 2026-11-01 --to 2026-11-30 --gtfs "$GTFS/kumagaya-yuyubus" --out out1
if [ "$rc" = 0 ] && grep -q '^0 boardings (0 cards)' out && [ -s out1/ridership.json ] &&
   [ -s out1/stops.csv ] && head -1 out1/tides/fare_transactions.csv | grep -q '^transaction_id,' &&
   head -1 out1/tides/station_activities.csv | grep -q '^service_date,stop_id,' &&
   [ "$(sha256sum backend.db)" = "$before" ]; then
	ok run_writes_files
else
	bad run_writes_files "rc $rc, $(cat out err)"
fi

expect bad_date 2 "kippuctl: --from 2026-02-30: not a date (YYYY-MM-DD)" \
	"$K" $R --from 2026-02-30 --to 2026-03-01 --out o
expect bad_date_form 2 "kippuctl: --to 2026/03/01: not a date (YYYY-MM-DD)" \
	"$K" $R --from 2026-02-01 --to 2026/03/01 --out o
expect to_before_from 2 "kippuctl: --to 2026-01-01 is before --from 2026-02-01" \
	"$K" $R --from 2026-02-01 --to 2026-01-01 --out o
expect k_zero 2 "kippuctl: --k must be 1 to 1000000" \
	"$K" $R --from 2026-02-01 --to 2026-02-02 --k 0 --out o
expect k_word 2 "kippuctl: --k must be 1 to 1000000" \
	"$K" $R --from 2026-02-01 --to 2026-02-02 --k ten --out o
expect no_secret 2 "kippuctl: --secret is required" \
	"$K" report ridership backend.db --from 2026-02-01 --to 2026-02-02 --out o
expect no_out 2 "kippuctl: --out is required" \
	"$K" $R --from 2026-02-01 --to 2026-02-02
expect short_secret 1 "kippuctl: report ridership: pseudonym secret short: 5 bytes, at least 16 needed (e.g. head -c 32 /dev/urandom > short)" \
	"$K" report ridership backend.db --secret short --from 2026-02-01 --to 2026-02-02 --out o
expect no_gtfs 2 "kippuctl: --gtfs nowhere: not a folder" \
	"$K" $R --from 2026-02-01 --to 2026-02-02 --gtfs nowhere --out o
expect no_opt_out 1 "kippuctl: report ridership: cannot read the opt-out list none.txt: No such file or directory" \
	"$K" $R --from 2026-02-01 --to 2026-02-02 --opt-out none.txt --out o
if expect no_database 1 "kippuctl: no such database: missing.db" \
	"$K" report ridership missing.db --secret secret --from 2026-02-01 --to 2026-02-02 --out o &&
   [ -e missing.db ]; then
	bad no_database_created "missing.db was created"
fi
finish "kippuctl report ridership"
