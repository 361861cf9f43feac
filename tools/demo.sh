#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# make demo: a backend and two terminals end to end, on loopback.
# Provisions an operator CA, the backend and two terminals (operator A's bus, operator B's
# rail gate), sells tickets at the backend, starts kippu-backend, lets both terminals fetch
# their signed config, tap offline on mock readers, sync, and shows: what riders saw, the
# records the backend stored, the ledger per operator, an overdraft of a 2-ride ticket used
# on both terminals, and a card denylisted at the backend refused after the next sync.
# Finally the records the backend stored are checked by an independent COSE verifier, and
# the ridership analytics write their figures and report.html (in DEMO_DIR when given).
# BACKEND=postgresql (make demo BACKEND=postgresql): the backend's database is a throw-away
# PostgreSQL (tests/pgtmp.sh) and two kippu-backend instances serve it, bus A syncing
# through the first, rail B through the second.
set -eu
BIN=$(cd "${KP_BIN:-build/bin}" && pwd)
SRC=$(cd "$(dirname "$0")" && pwd)
if [ -n "${DEMO_DIR:-}" ]; then
	mkdir -p "$DEMO_DIR"
	DIR=$(cd "$DEMO_DIR" && pwd)
	if [ -e "$DIR/backend.db" ] || [ -e "$DIR/ca.key" ]; then
		echo "demo: $DIR already holds a demo; choose an empty DEMO_DIR" >&2
		exit 1
	fi
	KEEP=1
else
	DIR=$(mktemp -d "${TMPDIR:-/tmp}/kippu-demo-XXXXXX")
	KEEP=0
fi
BACKEND_PID=""
BACKEND2_PID=""
PGDIR=""
cleanup() {
	[ -n "$BACKEND_PID" ] && kill "$BACKEND_PID" 2>/dev/null && wait "$BACKEND_PID" 2>/dev/null
	[ -n "$BACKEND2_PID" ] && kill "$BACKEND2_PID" 2>/dev/null &&
		wait "$BACKEND2_PID" 2>/dev/null
	[ -n "$PGDIR" ] && sh "$SRC/../tests/pgtmp.sh" stop "$PGDIR"
	[ "$KEEP" = 1 ] || rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
cd "$DIR"
cp "$SRC"/demo/sync/*.txt .
CTL="$BIN/kippuctl"
DB=backend.db
case "${BACKEND:-sqlite}" in
sqlite) ;;
postgresql)
	PGDIR=$(sh "$SRC/../tests/pgtmp.sh" start)
	DB=$(sh "$SRC/../tests/pgtmp.sh" uri "$PGDIR")
	echo "demo: the backend's database is PostgreSQL at $DB" ;;
*)	echo "demo: BACKEND is sqlite or postgresql, not '$BACKEND'" >&2; exit 2 ;;
esac

step() { printf '\n== %s\n' "$*"; }

# Prints what the rider saw on a terminal, from its mock HMI log.
rider_view() {
	grep '^show' "$1" | while read -r _ ms result reason product left text; do
		printf '  %s  %-8s %-16s %s\n' "$(TZ=Asia/Tokyo date -d "@$((ms / 1000))" +%H:%M)" \
			"$result" "$reason" "$text"
	done
	: > "$1"
}

terminal_conf() {   # ID OPERATOR ROUTE SCENARIO [PORT]
	sed -e "s/@ID@/$1/g" -e "s/@OP@/$2/g" -e "s/@ROUTE@/$3/g" -e "s/@SCENARIO@/$4/g" \
	    -e "s/@PORT@/${5:-$PORT}/g" "$SRC/demo/sync/terminal.conf.in" > "$1.conf"
}

start_backend() {   # NAME: a kippu-backend on a free port; its port in $PORT
	"$BIN/kippu-backend" --listen 127.0.0.1:0 --db "$DB" --ca ca.crt --cert backend.crt \
		--key backend.key > "$1.out" 2> "$1.log" &
	LAST_PID=$!
	for _ in $(seq 1 100); do
		grep -q 'listening on' "$1.out" 2>/dev/null && break
		sleep 0.05
	done
	PORT=$(sed -n 's/.*listening on .*:\([0-9]*\)$/\1/p' "$1.out")
	[ -n "$PORT" ] || { echo "backend did not start:"; cat "$1.log"; exit 1; }
	echo "  listening on 127.0.0.1:$PORT"
}

run_terminal() {    # ID SCENARIO
	"$BIN/kippu-terminal" --config "$1.conf" --offline --reader "mock:$2" 2>>"$1.log"
	rider_view "$1-hmi.log"
	echo "  $1: $(grep 'stopping:' "$1.log" | tail -n 1 | sed 's/^kippu-terminal: stopping: //')"
}

sync_terminal() {   # ID
	"$BIN/kippu-terminal" --config "$1.conf" --sync-once 2>>"$1.log" || {
		echo "  sync of $1 failed:"; tail -n 3 "$1.log"; exit 1; }
	echo "  $1: $(grep 'sync:' "$1.log" | tail -n 1 | sed 's/^kippu-terminal: sync: //')"
}

step "1. Operator CA; certificates for the backend and two terminals; the card-token key"
"$CTL" ca create --key ca.key --cert ca.crt --cn "Kansai Demo Operator CA"
"$CTL" backend create --ca-key ca.key --ca-cert ca.crt --key backend.key --cert backend.crt
"$CTL" terminal create --ca-key ca.key --ca-cert ca.crt --id BUS-A-01 --key BUS-A-01.key --cert BUS-A-01.crt
"$CTL" terminal create --ca-key ca.key --ca-cert ca.crt --id RAIL-B-01 --key RAIL-B-01.key --cert RAIL-B-01.crt
"$CTL" token-key create token.key
# The demo's riders tap on 2026-11-26 (the scenarios' clock): certificates checked at a tap
# are made for that clock, whatever today's date is.
"$CTL" jpki ca create --key jpki-ca.key --cert jpki-ca.crt --not-before 2026-01-01T00:00:00+09:00 >/dev/null
echo "JPKI test authentication CA jpki-ca.crt (a stand-in for J-LIS; its cards are made below)"

step "2. The backend sells: a 10-ride and a 2-ride ticket valid on bus A and rail B, ..."
. "$SRC/demo/sync/backend-setup.sh" >/dev/null
# Only terminals registered at the backend get config and may send records.
"$CTL" backend terminal add $DB BUS-A-01 --operator OP-A >/dev/null
"$CTL" backend terminal add $DB RAIL-B-01 --operator OP-B >/dev/null
"$CTL" backend entitlements $DB

step "3. kippu-backend on loopback (mutual TLS 1.2, ECDHE-ECDSA-AES128-GCM-SHA256)"
PORT2=""
if [ -n "$PGDIR" ]; then
	start_backend backend2               # a second instance on the same database
	BACKEND2_PID=$LAST_PID
	PORT2=$PORT
fi
start_backend backend
BACKEND_PID=$LAST_PID
terminal_conf BUS-A-01 OP-A R12 bus-a.txt
terminal_conf RAIL-B-01 OP-B L1 rail-b.txt "${PORT2:-$PORT}"
[ -z "$PORT2" ] || echo "  bus A syncs through 127.0.0.1:$PORT, rail B through 127.0.0.1:$PORT2"

step "4. Both terminals fetch their signed config bundle"
sync_terminal BUS-A-01
sync_terminal RAIL-B-01

step "5. Offline: the morning on operator A's bus"
run_terminal BUS-A-01 bus-a.txt

step "6. Offline: the same morning at operator B's rail gate (it has not heard of the bus)"
run_terminal RAIL-B-01 rail-b.txt

step "7. Both sync: signed records up, merged uses, a fresh bundle down"
sync_terminal BUS-A-01
sync_terminal RAIL-B-01

step "8. At the backend: records stored (verified signatures and chains)"
"$CTL" backend records $DB
step "   ledger per operator"
"$CTL" backend ledger $DB
step "   the 2-ride ticket was used 3 times on two offline terminals: an overdraft"
"$CTL" backend overdrafts $DB

step "9. Staff denylist alice's card at the backend; bus A syncs; alice and bob tap again"
"$CTL" backend deny $DB felica:0101020304050607 "reported stolen" --token-key token.key
sync_terminal BUS-A-01
run_terminal BUS-A-01 after.txt
sync_terminal BUS-A-01

step "10. My Number linkage (GunMaaS-style): two residents' test My Number cards"
"$CTL" jpki card create --ca-key jpki-ca.key --ca-cert jpki-ca.crt --dir hanako-card --serial 7305100100001001 \
	--not-before 2026-04-01T00:00:00+09:00 >/dev/null
"$CTL" jpki card create --ca-key jpki-ca.key --ca-cert jpki-ca.crt --dir taro-card --serial 7305100100001002 \
	--not-before 2026-04-01T00:00:00+09:00 >/dev/null
HANAKO=token:$("$CTL" linkage token --token-key token.key --cert hanako-card/auth.der --jpki-ca jpki-ca.crt)
echo "  hanako's linkage token: ${HANAKO#token:}"
echo "  (only this token is ever stored or sent; the 12-digit number is never read)"
"$CTL" backend product $DB RES 10 OP-A "Resident demand bus, 10 rides" --category resident >/dev/null
# Linked online at the backend today (whatever today is): hanako's residency covers it.
"$CTL" linkage add $DB jpki:hanako-card/auth.der resident 2026-04-01T00:00:00+09:00 \
	2040-04-01T00:00:00+09:00 --card felica:01010203040506D0 --token-key token.key \
	--jpki-ca jpki-ca.crt >/dev/null
"$CTL" linkage add $DB jpki:taro-card/auth.der senior-resident 2026-04-01T00:00:00+09:00 \
	2026-12-10T00:00:00+09:00 --token-key token.key --jpki-ca jpki-ca.crt >/dev/null
"$CTL" backend card $DB "$HANAKO" --label "hanako (linkage)"
"$CTL" backend sell $DB "$HANAKO" RES 2026-11-01T00:00:00+09:00 \
	2027-03-31T00:00:00+09:00 --token-key token.key
"$CTL" linkage list $DB --at 2026-11-26T14:00:00+09:00      # as of the demand bus's afternoon
# A direct tap proves only that somebody presented the certificate's bytes (readable without
# the PIN): this scheme allows it for resident products, at most 4 rides a day per linkage.
"$CTL" backend policy $DB direct on categories=resident rides-per-day=4 | sed 's/^/  /'
sync_terminal BUS-A-01
step "   on the demand bus: the My Number card tapped directly, a linked Suica, others"
run_terminal BUS-A-01 mynumber.txt
step "   at the city office counter (link mode: PIN, then the transit IC card)"
echo 4321 > pin.txt
"$BIN/kippu-terminal" --config BUS-A-01.conf --offline --reader mock:counter.txt \
	--link-mode --pin-file pin.txt 2>>BUS-A-01.log
grep '^show' BUS-A-01-hmi.log | while read -r _ ms result reason product left text; do
	printf '  %-8s %-16s %s\n' "$result" "$reason" "$text"; done
: > BUS-A-01-hmi.log
sync_terminal BUS-A-01
"$CTL" linkage requests $DB
step "   hanako's linkage is revoked; the bus syncs and her card is refused the next day"
"$CTL" linkage revoke $DB jpki:hanako-card/auth.der --token-key token.key \
	--jpki-ca jpki-ca.crt >/dev/null
sync_terminal BUS-A-01
run_terminal BUS-A-01 revoked.txt
sync_terminal BUS-A-01

step "11. Fares: a distance-fare bus priced by a GTFS feed sent in the signed bundle"
cp -r "$SRC/demo/fares" fares
cp fares/z-*.txt .
"$CTL" backend fares import fares/zone-bus $DB --feed-id zone-bus
"$CTL" backend load $DB fares/scheme.txt
"$CTL" backend card $DB felica:01010203040506F0 --label frank --token-key token.key
"$CTL" backend sell $DB felica:01010203040506F0 SV 2026-11-01T00:00:00+09:00 \
	2027-11-01T00:00:00+09:00 --balance 1000 --token-key token.key
"$CTL" terminal create --ca-key ca.key --ca-cert ca.crt --id BUS-Z-01 --key BUS-Z-01.key \
	--cert BUS-Z-01.crt
"$CTL" backend terminal add $DB BUS-Z-01 --operator OP-Z >/dev/null
terminal_conf BUS-Z-01 OP-Z Z1 z-on.txt
echo "place_file = BUS-Z-01-place.txt" >> BUS-Z-01.conf
sync_terminal BUS-Z-01
step "   frank taps on at the station (Z01) and off at the hospital (Z04), zone 1 -> 3"
echo "Z1 Z01" > BUS-Z-01-place.txt      # the bus's onboard system says where it is
run_terminal BUS-Z-01 z-on.txt
echo "Z1 Z04" > BUS-Z-01-place.txt
run_terminal BUS-Z-01 z-off.txt
step "   in the evening he taps on at the market (Z02) and forgets to tap off"
echo "Z1 Z02" > BUS-Z-01-place.txt
run_terminal BUS-Z-01 z-on2.txt
step "   the next morning the bus starts: the journey is charged its maximum fare, capped at"
echo "   the day cap of 500 yen (330 already paid that day)"
run_terminal BUS-Z-01 z-next.txt
"$CTL" journal list BUS-Z-01.db | tail -n 1 | sed 's/^/  /'
sync_terminal BUS-Z-01
"$CTL" backend entitlements $DB | awk 'NR == 1 || / SV /' | sed 's/^/  /'
step "   the same fares priced offline with kippuctl fares quote (the terminal's own code)"
"$CTL" fares quote BUS-Z-01.db fares/journeys.csv | cut -d, -f1-2,5-9,11

step "12. The records the backend stored, checked by an independent COSE/ECDSA verifier"
for t in BUS-A-01 RAIL-B-01 BUS-Z-01; do
	"$CTL" backend export $DB $t "export-$t"
	printf '  %s: ' $t
	python3 "$SRC/cose_verify.py" "export-$t"
done
"$CTL" journal verify BUS-A-01.db --ca ca.crt

step "13. Ridership analytics from the backend's records, read while it runs (README,"
echo "   \"Ridership analytics\"): k = 1 here, the demo's riders being few; cards only as pseudonyms"
head -c 32 /dev/urandom > ridership.secret
"$CTL" report ridership $DB --from 2026-11-01 --to 2026-11-30 --secret ridership.secret \
	--gtfs fares/zone-bus --k 1 --out ridership | sed 's/; /;\n  /g; s/^/  /'
echo "  the charts: ridership/report.html; TIDES: ridership/tides/"

kill "$BACKEND_PID"
wait "$BACKEND_PID" 2>/dev/null || true
BACKEND_PID=""
if [ -n "$BACKEND2_PID" ]; then
	kill "$BACKEND2_PID"
	wait "$BACKEND2_PID" 2>/dev/null || true
	BACKEND2_PID=""
fi
step "done: the backend stopped cleanly ($(tail -n 1 backend.log))"
if [ "$KEEP" = 1 ]; then
	echo "Everything the demo made is in $DIR (keys, certificates, databases, logs, exports)."
else
	echo "Run 'make demo DEMO_DIR=path' to keep the keys, databases, logs and exports."
fi
