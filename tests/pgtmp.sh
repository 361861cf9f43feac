#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# A throw-away PostgreSQL 15 for the tests (Debian's postgresql-15, installed by make deps):
# initdb in a new temporary folder, the server on a Unix socket in that folder (no TCP),
# a database "kippu" for the superuser "kippu" (trust: only the folder's owner and root
# reach the socket, the folder is 0700). Durability is off (fsync=off...): nothing here
# outlives the test.
#   pgtmp.sh start        starts one; prints its folder (the handle of the other commands)
#   pgtmp.sh uri DIR      prints its postgresql:// URI
#   pgtmp.sh stop DIR     stops it and removes the folder
#   pgtmp.sh run CMD...   starts one, runs CMD with KIPPU_TEST_PG set to its URI, stops it
#                         (also when CMD fails or the run is interrupted); CMD's status
# PostgreSQL refuses to run as root: run as root, the server runs as `nobody` (setpriv, no
# login session and no change to the system's users; its files are only in the folder,
# removed at the end); otherwise as the calling user. KP_PGBIN overrides the binaries'
# folder (/usr/lib/postgresql/15/bin).
PGBIN=${KP_PGBIN:-/usr/lib/postgresql/15/bin}
MARK=.kippu-pgtmp

die() { echo "pgtmp: $*" >&2; exit 1; }

# as_owner CMD...: CMD as the server's user
as_owner() {
	if [ "$(id -u)" = 0 ]; then
		setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$@"
	else
		"$@"
	fi
}

uri_of() { echo "postgresql:///kippu?host=$1&user=kippu"; }

check_dir() {
	[ -n "$1" ] && [ -f "$1/$MARK" ] || die "${1:-(none)} is not a folder pgtmp.sh started"
}

start() {
	[ -x "$PGBIN/initdb" ] && [ -x "$PGBIN/pg_ctl" ] ||
		die "no PostgreSQL 15 server in $PGBIN (make deps installs postgresql-15)"
	command -v pg_isready > /dev/null || die "no pg_isready (make deps installs postgresql-client-15)"
	dir=$(mktemp -d /tmp/kippu-pg.XXXXXX) || die "cannot make a temporary folder"
	: > "$dir/$MARK"
	[ "$(id -u)" = 0 ] && chown -R nobody:nogroup "$dir"
	if ! as_owner "$PGBIN/initdb" -D "$dir/data" -U kippu -A trust -E UTF8 --locale=C -N \
		> "$dir/initdb.log" 2>&1; then
		cat "$dir/initdb.log" >&2; rm -rf "$dir"; die "initdb failed"
	fi
	# pg_ctl -w polls until the server accepts connections (no fixed sleep)
	if ! as_owner "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 -s \
		-o "-k $dir -c listen_addresses= -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
		start > "$dir/pg_ctl.log" 2>&1; then
		cat "$dir/pg_ctl.log" "$dir/server.log" >&2; rm -rf "$dir"; die "the server did not start"
	fi
	n=0
	until pg_isready -q -h "$dir" -U kippu -d postgres; do
		n=$((n + 1))
		[ $n -gt 600 ] && { stop "$dir"; die "the server does not accept connections"; }
		sleep 0.05
	done
	if ! "$PGBIN/createdb" -h "$dir" -U kippu kippu > "$dir/createdb.log" 2>&1; then
		cat "$dir/createdb.log" >&2; stop "$dir"; die "createdb failed"
	fi
	echo "$dir"
}

stop() {
	check_dir "$1"
	if [ -f "$1/data/postmaster.pid" ]; then
		as_owner "$PGBIN/pg_ctl" -D "$1/data" -m immediate -w -t 60 -s stop > /dev/null 2>&1 ||
			echo "pgtmp: pg_ctl stop failed in $1" >&2
	fi
	rm -rf "$1"
}

case "$1" in
start) start ;;
uri) check_dir "$2"; uri_of "$2" ;;
stop) stop "$2" ;;
run)
	shift
	[ $# -gt 0 ] || die "run: a command to run"
	dir=$(start) || exit 1
	trap 'stop "$dir"' EXIT
	trap 'exit 130' INT TERM
	KIPPU_TEST_PG=$(uri_of "$dir") "$@"
	exit $?
	;;
*) die "usage: pgtmp.sh start | uri DIR | stop DIR | run CMD..." ;;
esac
