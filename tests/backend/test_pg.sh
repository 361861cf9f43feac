#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# PostgreSQL for the backend (README, "PostgreSQL"): a throw-away server from
# tests/pgtmp.sh (initdb and pg_ctl as an unprivileged user, a Unix socket in a temporary
# folder, no TCP), then test_db's contract of kp_db.h against it (the store's schema
# migrated, records in monthly partitions, two connections serialised by the per-terminal
# lock), the ridership analytics on that schema (test_ridership), then the bad cases: a
# server that is not running, a command that fails under
# `pgtmp.sh run` (the server is stopped and its folder removed all the same).
# Prints cmocka-style lines so tests/run.sh counts it.
KP_TESTS=${KP_TESTS:-build/tests}
HERE=$(cd "$(dirname "$0")/.." && pwd)
PGTMP="$HERE/pgtmp.sh"
. "$HERE/shtest.sh"                     # ok, bad, finish
T=$(mktemp -d "${TMPDIR:-/tmp}/kippu-pgtest.XXXXXX")
DIR=""
cleanup() {
	[ -n "$DIR" ] && [ -d "$DIR" ] && sh "$PGTMP" stop "$DIR"
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# --- a server starts, as whom, where ---
t0=$(date +%s.%N)
if DIR=$(sh "$PGTMP" start 2> "$T/start.err"); then
	t1=$(date +%s.%N)
	ok "pgtmp.sh start ($(echo "$t1 $t0" | awk "{ printf \"%.1f\", \$1 - \$2 }") s)"
else
	bad pgtmp_start "$(tail -n 5 "$T/start.err")"
	finish "test_pg"
fi
URI=$(sh "$PGTMP" uri "$DIR")
owner=$(stat -c %U "$DIR/data")
mode=$(stat -c %a "$DIR")
if [ "$(id -u)" = 0 ]; then want=nobody; else want=$(id -un); fi
if [ "$owner" = "$want" ] && [ "$mode" = 700 ] && [ -S "$DIR/.s.PGSQL.5432" ]; then
	ok "server runs as $owner in a 0700 folder, on a Unix socket there"
else
	bad server_user_socket "owner $owner (want $want), mode $mode, socket: $(ls -a "$DIR")"
fi
if grep -q 'listening on IPv' "$DIR/server.log"; then
	bad no_tcp "$(grep 'listening on' "$DIR/server.log")"
else
	ok "no TCP listener"
fi
if [ "$(psql "$URI" -Atc 'SHOW server_version_num' 2>&1 | cut -c1-2)" = 15 ]; then
	ok "PostgreSQL 15 answers at $URI"
else
	bad psql_answers "$(psql "$URI" -Atc 'SELECT 1' 2>&1)"
fi

# --- kp_db's contract and the store's schema against it ---
if KIPPU_TEST_PG=$URI "$KP_TESTS/test_db" > "$T/db.out" 2>&1 &&
   [ "$(grep -c '^\[  PASSED  \] 10 test(s)' "$T/db.out")" = 1 ]; then
	ok "test_db on PostgreSQL (contract, schema, partitions, per-terminal lock)"
else
	bad test_db_postgresql "$(grep -E 'FAILED|ERROR|LINE|run' "$T/db.out" | tail -n 12)"
fi
# the partitions test_db's schema case left behind: rows where the months say
parts=$(psql "$URI" -Atc "SELECT string_agg(tableoid::regclass::text || ':' || seq, ' '
	ORDER BY seq) FROM records" 2>&1)
if [ "$parts" = "records_2027_03:1 records_2027_04:2 records_default:3" ]; then
	ok "records by month: $parts"
else
	bad records_by_month "$parts"
fi

# --- the ridership analytics on the store's PostgreSQL schema: the same figures as SQLite ---
if KIPPU_TEST_PG=$URI "$KP_TESTS/test_ridership" > "$T/ridership.out" 2>&1 &&
   ! grep -q 'not run here' "$T/ridership.out"; then
	ok "test_ridership on PostgreSQL (the figures byte for byte as on SQLite)"
else
	bad test_ridership_postgresql "$(grep -E 'FAILED|ERROR|LINE|differs' "$T/ridership.out" | tail -n 12)"
fi

# --- the server stops; a client then gets a clear error ---
sh "$PGTMP" stop "$DIR"
if [ ! -e "$DIR" ] && ! pgrep -f "$DIR/data" > /dev/null; then
	ok "pgtmp.sh stop: no server, no folder"
else
	bad pgtmp_stop "$(ls -a "$DIR" 2>&1; pgrep -af "$DIR/data")"
fi
DIR=""
if KIPPU_TEST_PG=$URI "$KP_TESTS/test_db" > "$T/down.out" 2>&1; then
	bad server_not_running "test_db passed without a server"
elif grep -q 'cannot connect to PostgreSQL: .*No such file or directory' "$T/down.out"; then
	ok "server not running: $(grep -o 'cannot connect to PostgreSQL: [^(]*' "$T/down.out" | head -n 1 | cut -c1-90)"
else
	bad server_not_running "$(grep -E 'ERROR|connect' "$T/down.out" | head -n 3)"
fi

# --- a failing command under `run`: its status, and the server gone all the same ---
sh "$PGTMP" run sh -c 'echo "$KIPPU_TEST_PG" > "$1"; psql "$KIPPU_TEST_PG" -qAtc "SELECT 1" > /dev/null && exit 3' \
	sh "$T/run.uri" 2> "$T/run.err"
rc=$?
rdir=$(sed -n 's/.*host=\([^&]*\)&.*/\1/p' "$T/run.uri")
if [ "$rc" = 3 ] && [ -n "$rdir" ] && [ ! -e "$rdir" ] && ! pgrep -f "$rdir/data" > /dev/null; then
	ok "pgtmp.sh run: the command's status 3, server stopped, folder removed"
else
	bad pgtmp_run "rc $rc, folder '$rdir': $(ls -a "$rdir" 2>&1 | head -n 3) $(cat "$T/run.err")"
fi
if sh "$PGTMP" stop /tmp > "$T/stop.out" 2>&1; then
	bad pgtmp_stop_foreign "it went ahead"
elif grep -q 'is not a folder pgtmp.sh started' "$T/stop.out"; then
	ok "pgtmp.sh stop refuses a folder it did not start"
else
	bad pgtmp_stop_foreign "$(cat "$T/stop.out")"
fi
finish "test_pg"
