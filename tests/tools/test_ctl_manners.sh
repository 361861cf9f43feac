#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# kippuctl's error manners (issue 15): commands that read a database never create one, a
# terminal database given where the backend's is wanted (and the reverse) is named for what it
# is, missing key files are named with their cause, load files name what is undefined, fares
# import takes a GTFS .zip, and fares lookup/quote fail with stdout empty.
# Prints cmocka-style lines so tests/run.sh counts it.
KP_BIN=${KP_BIN:-build/bin}
KP_BIN=$(cd "$KP_BIN" && pwd)
K=$KP_BIN/kippuctl
HERE=$(cd "$(dirname "$0")/.." && pwd)
GTFS=${KP_GTFS_DIR:-$HERE/../../shared/data/gtfs}
T=$(mktemp -d "${TMPDIR:-/tmp}/kippu-manners.XXXXXX")
trap 'rm -rf "$T"' EXIT INT TERM
cd "$T" || exit 1
. "$HERE/shtest.sh"    # ok, bad, finish (the lines run.sh counts)
# run CMD...: its exit code in $rc, stdout in out, stderr in err.
run() { "$@" > out 2> err; rc=$?; }
# expect NAME RC STDERR_LINE CMD...: the exit code, stderr exactly that line, stdout empty.
expect() {
	name=$1; want_rc=$2; want_err=$3; shift 3
	run "$@"
	if [ "$rc" = "$want_rc" ] && [ "$(cat err)" = "$want_err" ] && [ ! -s out ]; then
		return 0
	fi
	bad "$name" "$* -> rc $rc, stderr '$(cat err)', stdout '$(head -c 200 out)'"
	return 1
}

echo "[==========] Running tests."

# ---- 1. commands that read a database never create one ----
missing_ok=1
for cmd in "journal list" "journal verify" "backend records" "backend ledger" \
           "backend terminals" "backend clones" "backend fare-rules" "backend policy" \
           "backend fares list" "backend quarantine list" "linkage list" "linkage cards"; do
	# shellcheck disable=SC2086
	expect "read_never_creates ($cmd)" 1 "kippuctl: no such database: typo.db" \
		"$K" $cmd typo.db || missing_ok=0
	if [ -e typo.db ]; then
		bad "read_never_creates ($cmd)" "typo.db was created"; missing_ok=0; rm -f typo.db*
	fi
done
for cmd in "journal export typo.db exp" "backend export typo.db rec.csv" \
           "fares lookup typo.db --feed-id F" "backend undeny typo.db token:00000000000000000000000000000000" \
           "backend quarantine clear typo.db BUS-A-01" "backend fares remove typo.db F"; do
	# shellcheck disable=SC2086
	expect "read_never_creates ($cmd)" 1 "kippuctl: no such database: typo.db" \
		"$K" $cmd || missing_ok=0
	if [ -e typo.db ] || [ -e exp ] || [ -e rec.csv ]; then
		bad "read_never_creates ($cmd)" "a file was created"; missing_ok=0; rm -rf typo.db* exp
	fi
done
[ $missing_ok = 1 ] && ok read_never_creates

# ---- 2. a terminal database is not a backend's, and the reverse ----
"$K" token-key create tk.key > /dev/null
printf 'operator OP-A "Operator A"\n' > ops.txt
"$K" load term.db ops.txt --token-key tk.key > /dev/null
"$K" backend operator be.db OP-A "Operator A" > /dev/null
kinds_ok=1
for cmd in "backend records" "backend operator" "backend policy" "linkage list"; do
	extra=""; [ "$cmd" = "backend operator" ] && extra="OP-B Other"
	# shellcheck disable=SC2086
	expect "db_kind_named ($cmd)" 1 \
		"kippuctl: term.db is a terminal database, not a backend database" \
		"$K" $cmd term.db $extra || kinds_ok=0
done
for cmd in "journal list" "journal verify" "fares lookup --feed-id F"; do
	# shellcheck disable=SC2086
	expect "db_kind_named ($cmd)" 1 \
		"kippuctl: be.db is a backend database, not a terminal database" \
		"$K" $cmd be.db || kinds_ok=0
done
expect "db_kind_named (load)" 1 \
	"kippuctl: be.db is a backend database, not a terminal database" \
	"$K" load be.db ops.txt --token-key tk.key || kinds_ok=0
: > empty.db
expect "db_kind_named (empty)" 1 "kippuctl: empty.db is an empty database, not a terminal database" \
	"$K" journal list empty.db || kinds_ok=0
[ $kinds_ok = 1 ] && ok db_kind_named
# the commands that build a database still make one
if "$K" journal list term.db > /dev/null 2>&1 && "$K" backend records be.db > out 2>&1 &&
   grep -q '(none)' out; then
	ok existing_databases_still_read
else
	bad existing_databases_still_read "$(cat out)"
fi

# ---- 3. a key or certificate file that cannot be read is named with its cause ----
files_ok=1
expect "missing_files_named (ca key)" 1 "kippuctl: cannot read CA key CA.key: No such file or directory" \
	"$K" terminal create --ca-key CA.key --ca-cert CA.crt --id BUS-A-01 --key T.key --cert T.crt ||
	files_ok=0
"$K" ca create --key CA.key --cert CA.crt --not-before 2026-01-01T00:00:00Z > /dev/null
expect "missing_files_named (ca cert)" 1 \
	"kippuctl: cannot read CA certificate nope.crt: No such file or directory" \
	"$K" terminal create --ca-key CA.key --ca-cert nope.crt --id BUS-A-01 --key T.key --cert T.crt ||
	files_ok=0
[ -e T.key ] && { bad missing_files_named "T.key was written"; files_ok=0; }
expect "missing_files_named (token key)" 1 "kippuctl: cannot read token key nokey: No such file or directory" \
	"$K" token --token-key nokey felica:0101020304050607 || files_ok=0
expect "missing_files_named (token key folder)" 1 "kippuctl: cannot read token key $T: it is a folder" \
	"$K" load term.db ops.txt --token-key "$T" || files_ok=0
expect "missing_files_named (journal cert)" 1 \
	"kippuctl: cannot read terminal certificate nope.crt: No such file or directory" \
	"$K" journal verify term.db --cert nope.crt || files_ok=0
expect "missing_files_named (quote token key)" 1 \
	"kippuctl: cannot read token key nokey: No such file or directory" \
	"$K" fares quote term.db j.csv --token-key nokey || files_ok=0
: > scen.txt
for f in key token-key; do
	set -- --reader mock:scen.txt --db tt.db --terminal-id BUS-A-01 --operator OP-A --offline \
		--key BUS-A-01.key --cert BUS-A-01.crt --token-key tk.key
	what="terminal key BUS-A-01.key"
	[ $f = token-key ] && { set -- "$@" --token-key no.key; what="token key no.key"; }
	run "$KP_BIN/kippu-terminal" "$@"
	grep -q "^kippu-terminal: cannot read $what: No such file or directory$" err && [ $rc = 1 ] ||
		{ bad "missing_files_named (kippu-terminal $f)" "rc $rc: $(cat err)"; files_ok=0; }
done
run "$KP_BIN/kippu-backend" --ca CA.crt --cert b.crt --key b.key --db b.db --listen 127.0.0.1:0
grep -q "cannot read certificate file b.crt: No such file or directory" err && [ $rc = 1 ] ||
	{ bad "missing_files_named (kippu-backend)" "rc $rc: $(cat err)"; files_ok=0; }
grep -q "Read/write of file failed\|input/output error" err && files_ok=0
[ $files_ok = 1 ] && ok missing_files_named

# ---- 4. load files name what is not defined, never an SQLite constraint ----
loads_ok=1
printf 'operator OP-B "Operator B"\n# a comment\nproduct P10 nride 10 OP-B,OP-Q 10-ride\n' > undef_op.txt
expect "load_names_undefined (operator)" 1 \
	"kippuctl: undef_op.txt:3: operator OP-Q is not defined above (nothing was loaded)" \
	"$K" load term.db undef_op.txt --token-key tk.key || loads_ok=0
printf 'product P10 nride 10 OP-A 10-ride\nentitlement 1001 felica:0101020304050607 P99 3 %s %s\n' \
	2026-11-01T00:00:00+09:00 2026-12-01T00:00:00+09:00 > undef_prod.txt
expect "load_names_undefined (product)" 1 \
	"kippuctl: undef_prod.txt:2: product P99 is not defined above (nothing was loaded)" \
	"$K" load term.db undef_prod.txt --token-key tk.key || loads_ok=0
printf 'product-scope P77 route 72\n' > undef_scope.txt
expect "load_names_undefined (scope)" 1 \
	"kippuctl: undef_scope.txt:1: product P77 is not defined above (nothing was loaded)" \
	"$K" load term.db undef_scope.txt --token-key tk.key || loads_ok=0
run "$K" backend load be.db undef_op.txt
[ "$(cat err)" = "kippuctl: undef_op.txt:3: operator OP-Q is not defined above" ] ||
	{ bad "load_names_undefined (backend)" "$(cat err)"; loads_ok=0; }
# OP-A was loaded into term.db before: a later file may use it
printf 'product P10 nride 10 OP-A 10-ride\nproduct-scope P10 route 72\n' > defined.txt
"$K" load term.db defined.txt --token-key tk.key > out 2> err ||
	{ bad "load_names_undefined (earlier load)" "$(cat err)"; loads_ok=0; }
[ $loads_ok = 1 ] && ok load_names_undefined

# ---- 5. fares import takes a GTFS .zip as published ----
zip_ok=1
python3 - "$GTFS/jp-aomori-nebutan-od" <<'PY' || { bad fares_import_zip "python3 zipfile"; zip_ok=0; }
import os, sys, zipfile
d = sys.argv[1]
with zipfile.ZipFile("jp-aomori.zip", "w", zipfile.ZIP_DEFLATED) as z:
    for f in sorted(os.listdir(d)):
        z.write(os.path.join(d, f), f)
with zipfile.ZipFile("slash.zip", "w") as z:
    z.writestr("feed/stops.txt", "stop_id\n")
with zipfile.ZipFile("dots.zip", "w") as z:
    z.writestr("..stops.txt", "stop_id\n")
# a zip bomb: 257 MiB of zeros in 260 kB
with zipfile.ZipFile("bomb.zip", "w", zipfile.ZIP_DEFLATED) as z:
    with z.open("stops.txt", "w", force_zip64=True) as f:
        for _ in range(257):
            f.write(bytes(1 << 20))
PY
scratch=$T/tmp; mkdir -p "$scratch"
run env TMPDIR="$scratch" "$K" fares import jp-aomori.zip z.db
[ $rc = 0 ] && grep -q '^imported jp-aomori.zip: 1 fares, 132 fare rules' out ||
	{ bad "fares_import_zip (import)" "rc $rc $(cat err)"; zip_ok=0; }
run "$K" fares lookup z.db --feed-id jp-aomori --route N1 --from-zone 1_01 --to-zone 2_01
[ "$(cat out)" = "300 JPY  fare 300_00  rule fare_rules.txt:2" ] ||
	{ bad "fares_import_zip (lookup)" "$(cat out) $(cat err)"; zip_ok=0; }
expect "fares_import_zip (slash)" 1 "kippuctl: fares import: member \"feed/stops.txt\": a name \
with '/', '\\' or \"..\" (or starting with '.') is refused: a feed's files are at the top of its zip" \
	env TMPDIR="$scratch" "$K" fares import slash.zip z2.db || zip_ok=0
run env TMPDIR="$scratch" "$K" fares import dots.zip z2.db
[ $rc = 1 ] && grep -q 'member "..stops.txt": a name with' err || { bad "fares_import_zip (dots)" "$(cat err)"; zip_ok=0; }
expect "fares_import_zip (bomb)" 1 \
	"kippuctl: fares import: member stops.txt: larger than 256 MiB uncompressed (one member); refused" \
	env TMPDIR="$scratch" "$K" fares import bomb.zip z2.db || zip_ok=0
echo "not a zip" > bad.zip
expect "fares_import_zip (not a zip)" 1 \
	"kippuctl: fares import: bad.zip: not a zip file we can read (Not a zip archive)" \
	env TMPDIR="$scratch" "$K" fares import bad.zip z2.db || zip_ok=0
expect "fares_import_zip (missing)" 1 "kippuctl: no such file or directory: nope.zip" \
	"$K" fares import nope.zip z2.db || zip_ok=0
run env TMPDIR="$scratch" "$K" backend fares import jp-aomori.zip bz.db
[ $rc = 0 ] && "$K" backend fares list bz.db | grep -q '^jp-aomori .* jp-aomori.zip ' ||
	{ bad "fares_import_zip (backend)" "rc $rc $(cat err)"; zip_ok=0; }
expect "fares_import_zip (backend missing)" 1 "kippuctl: no such file or directory: nope.zip" \
	"$K" backend fares import nope.zip z2.db || zip_ok=0
[ -e z2.db ] && { bad "fares_import_zip" "z2.db was created by a refused import"; zip_ok=0; }
[ -z "$(ls -A "$scratch")" ] || { bad "fares_import_zip" "left in TMPDIR: $(ls "$scratch")"; zip_ok=0; }
[ $zip_ok = 1 ] && ok fares_import_zip

# ---- 6. fares lookup names what the journey lacks; a failed quote prints nothing ----
fares_ok=1
if [ -d "$GTFS/jp-aomori-nebutan-od" ]; then
	"$K" fares import "$GTFS/jp-aomori-nebutan-od" f.db > /dev/null 2>&1
	expect "fares_errors (lookup)" 1 "kippuctl: fares lookup: no fare rule matches the journey; it \
has no --to or --to-zone, --date (a rule may need it)" \
		"$K" fares lookup f.db --feed-id jp-aomori-nebutan-od --route N1 --from-zone 1_01 ||
		fares_ok=0
else
	bad "fares_errors (lookup)" "no GTFS feeds at $GTFS (KP_GTFS_DIR)"; fares_ok=0
fi
printf 'time,card,operator,route,stop,event,rider_category\n%s\n%s\n' \
	2026-11-26T08:00:00+09:00,felica:0101020304050607,OP-A,R1,S1,tap, \
	BADTIME,felica:0101020304050607,OP-A,R1,S1,tap, > j.csv
expect "fares_errors (quote)" 1 \
	'kippuctl: fares quote: j.csv:3: time: "BADTIME" is not ISO 8601 with an offset' \
	"$K" fares quote term.db j.csv || fares_ok=0
head -n 2 j.csv > j2.csv
run "$K" fares quote term.db j2.csv
[ $rc = 0 ] && [ "$(wc -l < out)" = 2 ] || { bad "fares_errors (quote ok)" "rc $rc $(cat err)"; fares_ok=0; }
expect "fares_errors (quote db)" 1 "kippuctl: fares quote: no such database: typo.db" \
	"$K" fares quote typo.db j2.csv || fares_ok=0
[ ! -e typo.db ] || { bad "fares_errors (quote db)" "typo.db created"; fares_ok=0; }
[ $fares_ok = 1 ] && ok fares_errors

finish "kippuctl manners"
