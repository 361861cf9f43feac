#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# kippuctl's listings as JSON lines and CSV (README, "Listings as JSON and CSV"): a terminal's
# journal after the demo's mock scenario, a backend database with known operators, products,
# cards, sales, terminals and linkages, a fares lookup and a fares quote, each listed with
# --json (parsed with python3's json) and --csv (python3's csv, a value with a comma and a
# quote: the product name and the card label `alice, "A"`), checked field by field against
# the known data and against the human table; empty listings; a number column that holds no
# number; --json with --csv, and either on a command that lists nothing, exit 2.
# Prints cmocka-style lines so tests/run.sh counts it. Needs python3 and sqlite3 (make deps).
KP_BIN=${KP_BIN:-build/bin}
HERE=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(cd "$KP_BIN" && pwd)
CTL="$BIN/kippuctl"
T=$(mktemp -d "${TMPDIR:-/tmp}/kippu-listings.XXXXXX")
trap 'rm -rf "$T"' EXIT INT TERM
. "$(dirname "$0")/../shtest.sh"    # ok, bad, finish (the lines run.sh counts)
# check NAME PYTHON...: runs the python check (cwd $T); its stderr is the failure's reason.
check() {
	name=$1; shift
	if (cd "$T" && python3 -c "$@") > "$T/py.out" 2>&1; then ok "$name"; else bad "$name" "$(cat "$T/py.out")"; fi
}
cd "$T" || exit 1

echo "[==========] Running 10 test(s)."
# ---- a terminal's journal: the demo's scenario of 21 taps ----
cp "$HERE/../tools/demo/scenario.txt" "$HERE/../tools/demo/load.txt" \
   "$HERE/../tools/demo/terminal.conf" . &&
"$CTL" ca create --key ca.key --cert ca.crt >/dev/null &&
"$CTL" terminal create --ca-key ca.key --ca-cert ca.crt --id BUS-OPA-0042 --key terminal.key \
	--cert terminal.crt >/dev/null &&
"$CTL" token-key create token.key >/dev/null &&
"$CTL" load terminal.db load.txt --token-key token.key >/dev/null &&
"$BIN/kippu-terminal" --config terminal.conf 2>terminal.log &&
"$CTL" token --token-key token.key felica:0101020304050607 > alice.txt &&
"$CTL" journal list terminal.db > journal.txt &&
"$CTL" journal list terminal.db --json > journal.json &&
"$CTL" journal list --csv terminal.db > journal.csv || bad journal_setup "kippuctl or kippu-terminal failed"

check journal_list_json '
import json
rows = [json.loads(l) for l in open("journal.json")]
keys = ["seq", "time", "result", "reason", "operator", "card", "product", "left", "stop", "event",
        "amount", "fare", "error"]
assert len(rows) == 21, len(rows)
alice = open("alice.txt").read().strip().lower()
for i, r in enumerate(rows):
    assert list(r) == keys, list(r)
    assert r["seq"] == i + 1 and r["operator"] == "OP-A" and r["error"] is None, r
    assert isinstance(r["amount"], int) and r["time"].endswith("Z") and len(r["time"]) == 20, r
# the first taps of the scenario (tests/tools/test_integration.c): alice accepted with 2
# rides left, then a double tap, then her last ride
assert (rows[0]["result"], rows[0]["reason"], rows[0]["left"]) == ("accepted", "ok", 2), rows[0]
assert rows[0]["card"] == alice and rows[0]["product"] == "P10", rows[0]
assert (rows[1]["result"], rows[1]["left"], rows[1]["product"]) == ("already", None, None), rows[1]
assert (rows[2]["result"], rows[2]["left"]) == ("accepted", 0), rows[2]
assert [r["result"] for r in rows].count("accepted") == 4
# the human lines say the same, row by row (seq, time, result, reason, card prefix, left)
human = open("journal.txt").read().splitlines()
assert len(human) == 21
for h, r in zip(human, rows):
    w = h.split()
    assert int(w[0]) == r["seq"] and w[1] == r["time"] and w[2] == r["result"], (h, r)
    assert w[3] == r["reason"] and w[w.index("left") + 1] == str(r["left"] if r["left"] is not None else "-"), (h, r)
    card = w[w.index("card") + 1]
    assert card == ("-" if r["card"] is None else r["card"][:8] + ".."), (h, r)
'
check journal_list_csv '
import csv, json
rows = [json.loads(l) for l in open("journal.json")]
raw = open("journal.csv", newline="").read()
assert "\r" not in raw, "LF line ends"
c = list(csv.DictReader(raw.splitlines(True)))
assert len(c) == 21 and list(c[0]) == list(rows[0]), list(c[0])
for a, b in zip(c, rows):
    for k, v in b.items():
        assert a[k] == ("" if v is None else str(v)), (k, a[k], v)
'

# ---- a backend database with known rows ----
K1=0123456789abcdef0123456789abcdef
L1=00112233445566778899aabbccddeeff
"$CTL" backend operator b.db OPA "Operator A" &&
"$CTL" backend product b.db P1 10 OPA 'alice, "A"' &&
"$CTL" backend product b.db P2 5 OPA plain --category RES &&
"$CTL" backend card b.db token:$K1 --label 'alice, "A"' &&
"$CTL" backend sell b.db token:$K1 P1 2026-01-01T00:00:00Z 2027-01-01T00:00:00Z >/dev/null &&
"$CTL" backend terminal add b.db T1 --operator OPA >/dev/null &&
"$CTL" backend terminal add b.db T2 >/dev/null &&
# the linkage lasts to 2099: its card is linked at the real clock, so the test must not
# depend on today's date (make test-dates)
"$CTL" linkage add b.db token:$L1 RES 2026-01-01T00:00:00Z 2099-01-01T00:00:00Z \
	--card token:$K1 >/dev/null || bad backend_setup "kippuctl backend failed"
for l in products entitlements terminals records; do
	"$CTL" backend $l b.db > $l.txt && "$CTL" backend $l b.db --json > $l.json &&
	"$CTL" backend $l --csv b.db > $l.csv || bad "backend_$l" "kippuctl backend $l failed"
done
AT="--at 2026-06-01T00:00:00Z"
"$CTL" linkage list b.db $AT --json > linkage-list.json &&
"$CTL" linkage list b.db $AT --csv > linkage-list.csv &&
"$CTL" linkage cards b.db --json > linkage-cards.json || bad linkage_lists "kippuctl linkage failed"

check backend_products_json_and_csv '
import csv, json
rows = [json.loads(l) for l in open("products.json")]
assert rows == [
    {"product": "P1", "kind": "nride", "name": "alice, \"A\"", "rides": 10, "days": None,
     "route": None, "category": None, "operators": "OPA"},
    {"product": "P2", "kind": "nride", "name": "plain", "rides": 5, "days": None,
     "route": None, "category": "RES", "operators": "OPA"}], rows
raw = open("products.csv", newline="").read()
assert raw.splitlines()[0] == "product,kind,name,rides,days,route,category,operators", raw
assert "P1,nride,\"alice, \"\"A\"\"\",10,,,,OPA\n" in raw, raw
c = list(csv.DictReader(raw.splitlines(True)))
assert c[0]["name"] == "alice, \"A\"" and c[0]["rides"] == "10" and c[0]["days"] == "", c[0]
assert open("products.txt").read().splitlines()[0].split() == list(rows[0]), "human header"
'
check backend_entitlements_terminals_json "
import json, re
e = [json.loads(l) for l in open('entitlements.json')]
assert e == [{'ent': 1, 'token': '$K1'.upper(), 'product': 'P1', 'bought': 10, 'used': 0,
              'remaining': 10, 'valid_from': '2026-01-01T00:00Z',
              'valid_until': '2027-01-01T00:00Z'}], e
t = [json.loads(l) for l in open('terminals.json')]
assert [r['terminal'] for r in t] == ['T1', 'T2'], t
for r, op in zip(t, ['OPA', None]):
    # never seen: last_seen (\"never\" in the table) and epoch (\"-\") are null
    assert r['last_seen'] is None and r['epoch'] is None and r['retired'] is None, r
    # never said hello: nothing reported, so no unsent count (\"-\" in the table)
    assert r['unsent'] is None and list(r)[-1] == 'unsent', r
    assert r['acked'] == 0 and r['certs'] == 0 and r['status'] == 'active' and r['operator'] == op, r
    assert re.fullmatch(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ', r['registered']), r
human = open('terminals.txt').read().splitlines()
assert human[1].split()[:3] == ['T1', '0', 'never'] and human[2].split()[7] == '-', human
assert human[0].split()[-1] == 'unsent' and human[1].split()[-1] == '-', human
"
check linkage_list_cards_json_csv "
import csv, json
l = [json.loads(x) for x in open('linkage-list.json')]
assert l == [{'token': '$L1'.upper(), 'category': 'RES', 'valid_from': '2026-01-01T00:00Z',
              'valid_until': '2099-01-01T00:00Z', 'status': 'active', 'cards': 1}], l
c = [json.loads(x) for x in open('linkage-cards.json')]
assert len(c) == 1 and c[0]['linkage'] == '$L1'.upper() and c[0]['card'] == '$K1'.upper(), c
assert c[0]['source'] == 'backend' and list(c[0]) == ['linkage', 'card', 'linked', 'source'], c
r = list(csv.DictReader(open('linkage-list.csv', newline='')))
assert r == [{k: str(v) for k, v in l[0].items()}], r
"
# an empty listing: no JSON line, the CSV header alone, the table's word
if [ ! -s records.json ] && [ "$(cat records.csv)" = \
     "terminal,seq,time,result,reason,operator,product,ent,rides,left,kind,via,category" ] &&
   [ "$(cat records.txt)" = "(none)" ]; then
	ok empty_listing
else
	bad empty_listing "json: $(cat records.json) csv: $(cat records.csv) human: $(cat records.txt)"
fi

# ---- fares: lookup and quote ----
"$CTL" fares import "$HERE/data/fares/golden-flat" q.db --feed-id gf >/dev/null &&
printf 'operator A Golden City Bus\nfares A gf flat\nproduct SV stored A Scheme account\n' > q.txt &&
"$CTL" load q.db q.txt --token-key token.key >/dev/null &&
"$CTL" fares lookup q.db --feed-id gf --route A1 > lookup.txt &&
"$CTL" fares lookup q.db --feed-id gf --route A1 --json > lookup.json &&
"$CTL" fares lookup q.db --feed-id gf --route A1 --csv > lookup.csv &&
printf '%s\n' 'time,card,operator,route,stop,event,rider_category,entitlements' \
	'2026-12-01T08:00:00+09:00,"alice, ""A""",A,A1,A01,tap,,SV:2000' \
	'2026-12-01T08:00:30+09:00,"alice, ""A""",A,A1,A01,tap,,' > j.csv &&
"$CTL" fares quote q.db j.csv > quote.txt && "$CTL" fares quote q.db j.csv --json > quote.json &&
"$CTL" fares quote q.db j.csv --csv > quote.csv || bad fares_setup "kippuctl fares failed"
check fares_lookup_json_csv '
import csv, json
r = [json.loads(l) for l in open("lookup.json")]
assert r == [{"amount": 210, "currency": "JPY", "minor_digits": 0, "kind": "fare", "fare": "F_A1",
              "leg_group": None, "rule": "fare_rules.txt:2", "rider_category": None}], r
c = list(csv.DictReader(open("lookup.csv", newline="")))
assert c[0]["amount"] == "210" and c[0]["leg_group"] == "" and c[0]["fare"] == "F_A1", c
assert open("lookup.txt").read() == "210 JPY  fare F_A1  rule fare_rules.txt:2\n"
'
check fares_quote_json_csv '
import csv, json
q = [json.loads(l) for l in open("quote.json")]
assert len(q) == 2 and q[0]["card"] == "alice, \"A\"" and q[0]["amount"] == 210, q
assert (q[0]["product"], q[0]["left"], q[0]["result"]) == ("SV", 1790, "accepted"), q[0]
assert (q[1]["result"], q[1]["amount"], q[1]["left"], q[1]["product"]) == ("already", 0, None, None), q[1]
raw = open("quote.csv", newline="").read()
assert raw == open("quote.txt", newline="").read(), "quote: --csv is its human form"
c = list(csv.DictReader(raw.splitlines(True)))
assert c[0]["card"] == "alice, \"A\"" and c[0]["left"] == "1790" and c[1]["left"] == "", c
assert ",\"alice, \"\"A\"\"\",A," in raw, raw
'

# ---- error paths ----
# a number column that holds no number: JSON refuses it by name (exit 1), the table prints it
sqlite3 b.db "UPDATE entitlements SET bought = 'lots'" &&
"$CTL" backend entitlements b.db > bad.txt 2>&1 && grep -q lots bad.txt &&
! "$CTL" backend entitlements b.db --json > bad.json 2> bad.err; st=$?
if [ $st = 0 ] && [ ! -s bad.json ] && grep -q "column bought: 'lots' is not a whole number" bad.err; then
	ok json_refuses_a_non_number
else
	bad json_refuses_a_non_number "$(cat bad.txt bad.err)"
fi
missed=""
n0=$(sqlite3 b.db "SELECT count(*) FROM operators")
for cmd in "journal list terminal.db --json --csv" "backend records b.db --csv --json" \
           "backend quarantine list b.db --json --csv" "backend fares list b.db --json --csv" \
           "backend cert list b.db --json --csv" \
           "linkage list b.db --json --csv" "fares lookup q.db --feed-id gf --json --csv" \
           "fares quote q.db j.csv --csv --json"; do
	# shellcheck disable=SC2086
	"$CTL" $cmd > out.txt 2> err.txt; st=$?
	[ $st = 2 ] && [ ! -s out.txt ] && grep -q -- "--json and --csv: give one of them" err.txt ||
		missed="$missed [$cmd: exit $st]"
done
for cmd in "backend operator b.db OPX Other --json" "token-key create k2.key --csv" \
           "journal verify terminal.db --json" "linkage revoke b.db token:$L1 --csv" \
           "backend policy b.db --json" "fares import $HERE/data/fares/golden-flat q2.db --csv" \
           "backend cert revoke b.db T-1 $(printf '%064d' 0) --json"; do
	# shellcheck disable=SC2086
	"$CTL" $cmd > out.txt 2> err.txt; st=$?
	[ $st = 2 ] && grep -q -- "--json and --csv are for listings" err.txt ||
		missed="$missed [$cmd: exit $st]"
done
if [ -z "$missed" ] && [ "$(sqlite3 b.db "SELECT count(*) FROM operators")" = "$n0" ] &&
   [ ! -e k2.key ] && [ ! -e q2.db ] &&
   [ "$(sqlite3 b.db "SELECT status FROM linkages")" = active ]; then
	ok bad_combinations_exit_2
else
	bad bad_combinations_exit_2 "$missed"
fi

finish "listings as JSON and CSV"
