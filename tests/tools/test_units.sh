#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# `make install` and the systemd units (README, "Installing"): what lands where for
# PREFIX=/usr and PREFIX=/usr/local (stripped or not, kippu-pn532-emu only with
# install-dev-tools, man pages by wildcard), the example terminal.conf holding every key of
# `kippu-terminal --config-keys`; `systemd-analyze verify` of the installed units (their
# ExecStart rewritten into the DESTDIR) with no complaint at all, shown to catch broken units;
# and `systemd-analyze security --offline=true` exposure at most the README's figures,
# shown to bite on a unit without its sandbox.
# Prints cmocka-style lines so tests/run.sh counts it. Needs systemd (systemd-analyze),
# binutils (readelf).
KP_BIN=${KP_BIN:-build/bin}
case "$KP_BIN" in /*) ;; *) KP_BIN=$(pwd)/$KP_BIN ;; esac
TOP=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$(dirname "$KP_BIN")
. "$TOP/tests/shtest.sh"
T=$(mktemp -d "${TMPDIR:-/tmp}/kippu-units.XXXXXX")
trap '[ "${KP_KEEP_TMP:-0}" = 1 ] || rm -rf "$T"' EXIT
trap 'exit 1' INT TERM
# The README's exposure figures ("Installing"), times ten: systemd-analyze's --threshold.
MAX_TERMINAL=15
MAX_BACKEND=11

echo "[==========] Running 7 test(s)."
# files ROOT: every file under ROOT, man pages apart, one per line, sorted.
files() { (cd "$1" && find . \( -type f -o -type l \) -not -path './*/share/man/*' | sort); }
# stripped FILE: 0 when FILE has no symbol table.
stripped() { ! readelf -S --wide "$1" | grep -q '\.symtab'; }
# mans_ok ROOT MANDIR [dev]: each tools/man page at MANDIR/manS/, and no other page; the
# developer tool's page (kippu-pn532-emu.*) only with "dev" (make install-dev-tools).
mans_ok() {
	n=0
	for m in "$TOP"/tools/man/*.1 "$TOP"/tools/man/*.5 "$TOP"/tools/man/*.8; do
		[ -f "$m" ] || continue
		case "${m##*/}" in kippu-pn532-emu.*) [ "$3" = dev ] || continue ;; esac
		n=$((n + 1))
		cmp -s "$m" "$1$2/man${m##*.}/${m##*/}" || { echo "    ${m##*/} not installed"; return 1; }
	done
	[ "$(find "$1$2" -type f 2>/dev/null | wc -l)" -eq $n ]
}

# 1. PREFIX=/usr: Debian's paths, stripped programs, no test tool.
R=$T/usr-root
cat > "$T/want.usr" <<'LIST'
./etc/kippu/backend.conf
./etc/kippu/terminal.conf
./lib/systemd/system/kippu-backend.service
./lib/systemd/system/kippu-terminal.service
./usr/bin/kippu-loadgen
./usr/bin/kippuctl
./usr/sbin/kippu-backend
./usr/sbin/kippu-terminal
./usr/share/kippu/60-kippu-nfc.rules
./usr/share/kippu/libnfc.conf
./usr/share/kippu/load.txt
./usr/share/kippu/scenario.txt
LIST
if ! kmake -s install BUILD="$BUILD" PREFIX=/usr DESTDIR="$R" > "$T/install.out" 2>&1; then
	bad install_usr "make install failed: $(tail -n 5 "$T/install.out")"
elif ! files "$R" | diff "$T/want.usr" - > "$T/diff" 2>&1; then
	bad install_usr "installed files differ from the list: $(cat "$T/diff")"
elif ! stripped "$R/usr/sbin/kippu-terminal" || ! stripped "$R/usr/bin/kippuctl"; then
	bad install_usr "programs not stripped"
elif ! mans_ok "$R" /usr/share/man; then
	bad install_usr "man pages not installed as tools/man/ holds them"
elif ! grep -qx 'ExecStart=/usr/sbin/kippu-terminal --config /etc/kippu/terminal.conf' \
		"$R/lib/systemd/system/kippu-terminal.service" ||
     ! grep -qx 'ExecStart=/usr/sbin/kippu-backend --config /etc/kippu/backend.conf' \
		"$R/lib/systemd/system/kippu-backend.service"; then
	bad install_usr "ExecStart lines: $(grep -h ExecStart "$R"/lib/systemd/system/*)"
else
	ok install_usr
fi

# 2. PREFIX=/usr/local with INSTALL_STRIP= and install-dev-tools: paths under the prefix
# (units name them), symbols kept, the emulator in bin.
L=$T/local-root
if ! kmake -s install install-dev-tools BUILD="$BUILD" DESTDIR="$L" INSTALL_STRIP= \
		> "$T/install2.out" 2>&1; then
	bad install_local "make install failed: $(tail -n 5 "$T/install2.out")"
elif files "$L" > "$T/have.local"; ! { sed -e 's|^\./usr/|./usr/local/|' -e 's|^\./etc/|./usr/local/etc/|' \
		-e 's|^\./lib/|./usr/local/lib/|' "$T/want.usr"; echo ./usr/local/bin/kippu-pn532-emu; } |
		sort | diff - "$T/have.local" > "$T/diff" 2>&1; then
	bad install_local "installed files differ: $(cat "$T/diff")"
elif stripped "$L/usr/local/sbin/kippu-terminal" || stripped "$L/usr/local/bin/kippu-pn532-emu"; then
	bad install_local "INSTALL_STRIP= still stripped the programs"
elif ! mans_ok "$L" /usr/local/share/man dev; then
	bad install_local "man pages (with the developer tool's) not installed as tools/man/ holds them"
elif ! grep -qx 'ExecStart=/usr/local/sbin/kippu-terminal --config /usr/local/etc/kippu/terminal.conf' \
		"$L/usr/local/lib/systemd/system/kippu-terminal.service"; then
	bad install_local "ExecStart: $(grep -h ExecStart "$L"/usr/local/lib/systemd/system/*)"
else
	ok install_local
fi

# 3. The example terminal.conf and backend.conf: one commented `#key =` line per key each
# parser takes (its --config-keys), and nothing set.
why=""
for pair in kippu-terminal:terminal.conf:30 kippu-backend:backend.conf:10; do
	prog=${pair%%:*}; rest=${pair#*:}; conf=$R/etc/kippu/${rest%%:*}; min=${rest#*:}
	keys=$("$KP_BIN/$prog" --config-keys | sed -n 's/^| `\([a-z_-]*\)` |.*/\1/p')
	missing=""; n=0
	for k in $keys; do
		n=$((n + 1))
		grep -q "^#$k =" "$conf" || missing="$missing $k"
	done
	if [ $n -lt "$min" ]; then
		why="$why only $n keys from $prog --config-keys;"
	elif [ -n "$missing" ] || [ "$(grep -c '^#[a-z_-]* =' "$conf")" -ne $n ]; then
		why="$why ${conf##*/} lacks:$missing (or holds other keys);"
	elif grep -v '^#' "$conf" | grep -q .; then
		why="$why ${conf##*/} sets something: $(grep -v '^#' "$conf" | grep .);"
	fi
done
[ -z "$why" ] && ok conf_has_every_key || bad conf_has_every_key "$why"

# verify UNIT...: `systemd-analyze verify` accepts each UNIT without a word (a warning such
# as an unknown key or a bad value exits 0 but is a broken unit all the same). Man pages are
# not looked up (--man=no): they are installed elsewhere than man searches.
verify() { systemd-analyze verify --man=no "$@" > "$T/verify.out" 2>&1 && ! [ -s "$T/verify.out" ]; }
# The installed units with ExecStart pointing into the DESTDIR, so that verify finds them.
mkdir -p "$T/units"
for u in kippu-terminal kippu-backend; do
	sed "s|^ExecStart=/usr/sbin/|ExecStart=$R/usr/sbin/|" "$R/lib/systemd/system/$u.service" \
		> "$T/units/$u.service"
done

# 4. Both installed units verify cleanly.
if verify "$T/units/kippu-terminal.service" "$T/units/kippu-backend.service"; then
	ok units_verify
else
	bad units_verify "$(cat "$T/verify.out")"
fi

# 5. The check catches broken units: an unknown key, a bad value, a missing program, a
# missing [Service] section, a relative ExecStart.
mkdir -p "$T/broken"
i=0; passed_broken=""
for edit in 's/^ProtectSystem=/ProtectSystm=/' 's/^Type=notify/Type=notifyy/' \
	    "s|^ExecStart=$R/usr/sbin/|ExecStart=$T/nowhere/|" 's/^\[Service\]/[Servce]/' \
	    's|^ExecStart=[^ ]*/|ExecStart=|'; do
	i=$((i + 1))
	sed "$edit" "$T/units/kippu-terminal.service" > "$T/broken/kippu-broken$i.service"
	cmp -s "$T/units/kippu-terminal.service" "$T/broken/kippu-broken$i.service" &&
		passed_broken="$passed_broken ($edit changed nothing)"
	verify "$T/broken/kippu-broken$i.service" && passed_broken="$passed_broken $edit"
done
if [ -z "$passed_broken" ]; then
	ok verify_catches_broken_units
else
	bad verify_catches_broken_units "taken as good:$passed_broken"
fi

# 6. Exposure (systemd-analyze security --offline=true) at most the README's figures.
exposure() { systemd-analyze security --offline=true "$1" 2>&1 | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p'; }
secure() { systemd-analyze security --offline=true --threshold="$2" "$1" > /dev/null 2>&1; }
te=$(exposure "$T/units/kippu-terminal.service"); be=$(exposure "$T/units/kippu-backend.service")
if [ -z "$te" ] || [ -z "$be" ]; then
	bad security_exposure "no exposure figure from systemd-analyze security"
elif secure "$T/units/kippu-terminal.service" $MAX_TERMINAL &&
     secure "$T/units/kippu-backend.service" $MAX_BACKEND; then
	ok security_exposure
	echo "    exposure: kippu-terminal.service $te, kippu-backend.service $be"
else
	bad security_exposure "kippu-terminal.service $te (at most 1.5), kippu-backend.service $be (at most 1.1)"
fi

# 7. ... and the same check fails for the backend's unit without its sandbox lines.
sed '/^NoNewPrivileges=/,/^SystemCallErrorNumber=/d' "$T/units/kippu-backend.service" \
	> "$T/broken/kippu-bare.service"
if ! grep -q '^ProtectSystem=' "$T/broken/kippu-bare.service" &&
   ! secure "$T/broken/kippu-bare.service" $MAX_BACKEND; then
	ok security_check_bites
else
	bad security_check_bites "a unit without its sandbox passed (exposure $(exposure "$T/broken/kippu-bare.service"))"
fi

finish "make install and the systemd units"
