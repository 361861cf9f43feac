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
# wait_line FILE TEXT: until TEXT is in FILE, at most $WAIT s (60 unset); sooner 1 if the
# process $BPID (when set) has ended.
wait_line() {
	end=$(($(date +%s) + ${WAIT:-60}))
	until grep -q "$2" "$1" 2>/dev/null; do
		[ "$(date +%s)" -gt "$end" ] && return 1
		[ -n "$BPID" ] && ! kill -0 "$BPID" 2>/dev/null && return 1
		sleep 0.05
	done
}
# terminal_to_backend PORT: demo_fleet's terminal.conf syncs with the backend on
# 127.0.0.1:PORT (its certificates: demo_fleet's)
terminal_to_backend() {
	printf 'backend = 127.0.0.1:%s\nbackend_ca = ca.crt\nbackend_cert = backend.crt\n' "$1" \
		>> terminal.conf
}
# kmake ARGS...: make in the tree, without the flags and variables of the make running the
# suite (`make check SANITIZE=1` must not reach the make a test runs).
kmake() { env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u MAKEOVERRIDES make -C "$TOP" "$@"; }
# demo_fleet CTL TOOLS DB: in the current folder, the demo's terminal (tools/demo: its
# scenario, load file and configuration, terminal.db loaded) with the operator CA, the
# backend's and BUS-OPA-0042's keys and certificates and the token key, registered at DB.
demo_fleet() {
	cp "$2/demo/scenario.txt" "$2/demo/load.txt" "$2/demo/terminal.conf" . &&
	"$1" ca create --key ca.key --cert ca.crt &&
	"$1" backend create --ca-key ca.key --ca-cert ca.crt --key backend.key --cert backend.crt &&
	"$1" terminal create --ca-key ca.key --ca-cert ca.crt --id BUS-OPA-0042 \
		--key terminal.key --cert terminal.crt &&
	"$1" token-key create token.key &&
	"$1" load terminal.db load.txt --token-key token.key &&
	"$1" backend operator "$3" OP-A "Bus A" &&
	"$1" backend terminal add "$3" BUS-OPA-0042 --operator OP-A
}
