#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Command-line manners (issue 15), and the man pages against the programs themselves:
# - each program's long options in --help are exactly those of its man page's OPTIONS section
#   (both read mechanically: every --name in --help, every --name on an OPTIONS tag line);
# - the commands of `kippuctl --help` are exactly the COMMANDS entries of kippuctl.1, and
#   `kippuctl COMMAND --help` prints that command's usage (exit 0, no file touched);
# - kippu.conf.5's KEYS are exactly the keys of `kippu-terminal --config-keys`;
# - --version is "PROG (kippu) VERSION", the same VERSION for every program; -h is --help;
#   an unknown option or a missing argument exits 2, says so on stderr naming the program,
#   prints nothing on stdout; the man pages format without a warning (lintian reads them).
# Prints cmocka-style lines so tests/run.sh counts it.
KP_BIN=$(cd "${KP_BIN:-build/bin}" && pwd) || exit 1
HERE=$(cd "$(dirname "$0")/../.." && pwd)
MAN="$HERE/tools/man"
T=$(mktemp -d "${TMPDIR:-/tmp}/kippu-man.XXXXXX")
trap 'rm -rf "$T"' EXIT INT TERM
. "$(dirname "$0")/../shtest.sh"    # ok, bad, finish (the lines run.sh counts)
PROGS="kippu-terminal kippu-backend kippuctl kippu-pn532-emu kippu-loadgen"

# The lines of section $2 of man page $1, with roff's \- read as -.
section() {
	awk -v s="$2" '/^\.SH/ { on = ($2 == s || $2 == "\"" s "\""); next } on' "$1" | sed 's/\\-/-/g'
}
# The tag lines (the line after each .TP) of section $2 of man page $1.
tags() { section "$1" "$2" | awk 'prev == ".TP" { print } { prev = $1 }'; }
# Every --long-option in the text on stdin, sorted, one a line.
longopts() { grep -o -- '--[a-z][a-z0-9-]*' | sort -u; }
# The commands named by usage lines "  kippuctl NAME ARGS..." on stdin: NAME is the leading
# words of a-z 0-9 - |, and "a|b" in its last word names both (the rule of tools/kippuctl.c).
commands() {
	awk 'index($0, "  kippuctl ") == 1 {
		pre = ""; last = ""
		for (i = 2; i <= NF && $i ~ /^[a-z][a-z0-9|-]*$/; i++) {
			if (last != "") pre = pre last " "
			last = $i
		}
		if (last == "") next
		k = split(last, alt, "|")
		for (j = 1; j <= k; j++) print pre alt[j]
	}' | sort -u
}
# same WHAT A B NAME_A NAME_B: A and B (files of lines) hold the same lines; else the
# difference, each line named by where it is only, in $diff_text.
same() {
	if cmp -s "$2" "$3"; then return 0; fi
	diff_text=$( { comm -23 "$2" "$3" | sed "s/^/[only in $4: /; s/$/]/"
	               comm -13 "$2" "$3" | sed "s/^/[only in $5: /; s/$/]/"; } | tr '\n' ' ')
	return 1
}
# lists_match TEST MIN WHAT A B NAME_A NAME_B: A has at least MIN lines, and B the same ones.
lists_match() {
	if [ "$(wc -l < "$4")" -ge "$2" ] && same "$3" "$4" "$5" "$6" "$7"; then
		ok "$1"
	else
		bad "$1" "$(wc -l < "$4") $3;$diff_text"
	fi
}

echo "[==========] Running 9 test(s)."

# 1. long options: --help against the man page's OPTIONS section
miss=""
for p in $PROGS; do
	page=$(ls "$MAN/$p".[0-9])
	"$KP_BIN/$p" --help | longopts > "$T/$p.help"
	tags "$page" OPTIONS | longopts > "$T/$p.man"
	same "$p" "$T/$p.help" "$T/$p.man" "$p --help" "$(basename "$page") OPTIONS" ||
		miss="$miss $diff_text"
done
[ -z "$miss" ] && ok options_match_man_pages || bad options_match_man_pages "$miss"

# 2. kippuctl's commands: --help against kippuctl.1's COMMANDS; each one's own --help
"$KP_BIN/kippuctl" --help | commands > "$T/cmds.help"
tags "$MAN/kippuctl.1" COMMANDS | sed -n 's/^\.B /  kippuctl /p' | commands > "$T/cmds.man"
lists_match commands_match_man_page 40 commands "$T/cmds.help" "$T/cmds.man" "kippuctl --help" \
	"kippuctl.1 COMMANDS"

# Each command's --help (and -h): exit 0, its own usage line(s) on stdout, nothing on
# stderr, and no file made though a DB argument is given.
miss=""
mkdir "$T/cwd"
while read -r c; do
	# shellcheck disable=SC2086 # the command's words are separate arguments
	(cd "$T/cwd" && "$KP_BIN/kippuctl" $c x.db --help > "$T/sub.out" 2> "$T/sub.err")
	rc=$?
	# shellcheck disable=SC2086
	(cd "$T/cwd" && "$KP_BIN/kippuctl" $c x.db -h > "$T/sub.h" 2>&1)
	first=${c%% *}
	if [ $rc -ne 0 ] || [ -s "$T/sub.err" ] || [ "$(head -n 1 "$T/sub.out")" != "usage:" ] ||
	   ! grep -q "^  kippuctl $first " "$T/sub.out" ||
	   grep -qv "^  kippuctl $first \|^   \|^usage:" "$T/sub.out" ||
	   ! cmp -s "$T/sub.out" "$T/sub.h" || [ -n "$(ls -A "$T/cwd")" ]; then
		miss="$miss [$c: rc=$rc $(head -c 200 "$T/sub.err") files: $(ls -A "$T/cwd")]"
		rm -rf "$T/cwd"; mkdir "$T/cwd"
	fi
done < "$T/cmds.help"
[ -z "$miss" ] && ok every_command_has_its_help || bad every_command_has_its_help "$miss"

# The old behaviour: `kippuctl journal list --help` was "list: unrecognized option '--help'"
# and the whole usage on stderr, exit 2; two-word groups likewise.
out=$("$KP_BIN/kippuctl" journal list --help 2> "$T/err"); rc=$?
rec=$("$KP_BIN/kippuctl" backend records --help 2>> "$T/err")
"$KP_BIN/kippuctl" no-such-command --help > "$T/nosuch.out" 2> "$T/nosuch.err"; nrc=$?
if [ $rc -eq 0 ] && [ "$out" = "usage:
  kippuctl journal list DB [--json|--csv]" ] && [ ! -s "$T/err" ] &&
   echo "$rec" | grep -q "^  kippuctl backend records|ledger|" &&
   [ "$(echo "$rec" | wc -l)" -eq 3 ] && [ $nrc -eq 2 ] && [ ! -s "$T/nosuch.out" ] &&
   grep -q "^kippuctl: no command 'no-such-command'" "$T/nosuch.err"; then
	ok subcommand_help_is_its_own
else
	bad subcommand_help_is_its_own \
		"rc=$rc out=[$out] rec=[$rec] err=[$(cat "$T/err")] unknown: rc=$nrc"
fi

# 3. kippu.conf.5 against --config-keys
"$KP_BIN/kippu-terminal" --config-keys | sed -n 's/^| `\([a-z_]*\)` |.*/\1/p' | sort > "$T/keys.prog"
tags "$MAN/kippu.conf.5" KEYS | sed -n 's/^\.B //p' | sort > "$T/keys.man"
lists_match config_keys_match_man_page 30 keys "$T/keys.prog" "$T/keys.man" \
	"kippu-terminal --config-keys" "kippu.conf.5 KEYS"

# 4. --version: one line, "PROG (kippu) VERSION", the same VERSION everywhere
miss=""; versions=""
for p in $PROGS; do
	v=$("$KP_BIN/$p" --version 2> "$T/err"); rc=$?
	if [ $rc -ne 0 ] || [ -s "$T/err" ] || [ "$(echo "$v" | wc -l)" -ne 1 ] ||
	   ! echo "$v" | grep -Eq "^$p \(kippu\) [0-9a-f.g-]+"; then
		miss="$miss [$p: rc=$rc '$v']"
	fi
	versions="$versions${v#"$p (kippu) "}
"
done
n=$(printf '%s' "$versions" | sort -u | wc -l)
[ -z "$miss" ] && [ "$n" -eq 1 ] && ok version_line || bad version_line "$miss; versions: $versions"

# 5. -h is --help: on stdout, exit 0, nothing on stderr
miss=""
for p in $PROGS; do
	"$KP_BIN/$p" --help > "$T/long" 2> "$T/long.err"; rl=$?
	"$KP_BIN/$p" -h > "$T/short" 2> "$T/short.err"; rs=$?
	if [ $rl -ne 0 ] || [ $rs -ne 0 ] || [ ! -s "$T/long" ] || [ -s "$T/long.err" ] ||
	   [ -s "$T/short.err" ] || ! cmp -s "$T/long" "$T/short" || ! grep -q "$p" "$T/long"; then
		miss="$miss [$p: --help rc=$rl -h rc=$rs]"
	fi
done
[ -z "$miss" ] && ok h_is_help || bad h_is_help "$miss"

# 6. usage errors: exit 2, nothing on stdout, stderr names the program (not getopt's argv[0],
# which was the subcommand: "create: unrecognized option")
miss=""
usage_error() { # PROG WHAT ARGS...: exit 2, stdout empty, stderr's first line "PROG: ...WHAT"
	p=$1; what=$2; shift 2
	"$KP_BIN/$p" "$@" > "$T/ue.out" 2> "$T/ue.err"; rc=$?
	if [ $rc -ne 2 ] || [ -s "$T/ue.out" ] || ! head -n 1 "$T/ue.err" | grep -q "^$p: .*$what"; then
		miss="$miss [$p $*: rc=$rc stdout=$(wc -c < "$T/ue.out") stderr=$(head -n 1 "$T/ue.err")]"
	fi
}
for p in $PROGS; do
	usage_error "$p" "unrecognized option" --no-such-option
done
usage_error kippu-terminal "requires an argument" --db
usage_error kippu-backend "requires an argument" --listen
usage_error kippu-backend "whole number" --max-conns 0
usage_error kippu-pn532-emu "requires an argument" --scenario
usage_error kippu-pn532-emu "--fault: bad value 'melt'" --scenario s.txt --fault melt
usage_error kippu-pn532-emu "--scenario FILE is required"
usage_error kippu-backend "unexpected argument 'extra'" --db x.db extra
usage_error kippuctl "unrecognized option '--no-such'" ca create --no-such --key k --cert c
usage_error kippuctl "requires an argument" ca create --key
usage_error kippuctl "unrecognized option" journal list x.db --bogus
usage_error kippuctl "--days must be" ca create --key k --cert c --days 0
usage_error kippu-loadgen "--terminals must be 1 to 2000" --terminals 0
usage_error kippu-loadgen "--backend HOST:PORT is required" --ca-cert c --ca-key k
[ -z "$miss" ] && ok usage_errors_exit_2 || bad usage_errors_exit_2 "$miss"

# 7. the man pages format without a warning
miss=""
if ! command -v man > /dev/null 2>&1; then
	miss="man is not installed (make deps installs man-db)"
fi
for m in "$MAN"/*.[0-9]; do
	[ -n "$miss" ] && break
	w=$(LC_ALL=C.UTF-8 man --warnings -E UTF-8 -l -Tutf8 -Z "$m" 2>&1 > /dev/null)
	[ -z "$w" ] || miss="$miss [$(basename "$m"): $w]"
	head -n 1 "$m" | grep -q 'SPDX-License-Identifier: Apache-2.0' ||
		miss="$miss [$(basename "$m"): no SPDX]"
done
[ -z "$miss" ] && ok man_pages_format_cleanly || bad man_pages_format_cleanly "$miss"

finish "man pages and --help"
