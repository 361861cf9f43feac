#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The Debian packages (README, "Installing"): built by `make deb` into a throw-away BUILD
# (or taken from KP_DEB_DIR, where `make deb check` built them in the same run), each
# extracted with dpkg -x and checked for what lands where (programs in usr/sbin and
# usr/bin, units in lib/systemd/system, /etc/kippu's conffiles, man pages, the PN532
# emulator only in kippu-dev-tools), their control data (Depends, the postinst's user);
# lintian on the .changes with no error and no warning outside the README's list; then the
# terminal's and the backend's units' ExecStart lines, read from the extracted units with
# their paths moved into the throw-away root, run as systemd would: the terminal on the
# packaged sample scenario to its end (exit 0), the backend until it listens, then SIGTERM
# (exit 0). Their configurations are the packaged examples with every default uncommented.
# Prints cmocka-style lines so tests/run.sh counts it. Needs the packages of `make deps`
# (dpkg-dev, debhelper, fakeroot, lintian).
TOP=$(cd "$(dirname "$0")/../.." && pwd)
. "$TOP/tests/shtest.sh"
T=$(mktemp -d "${TMPDIR:-/tmp}/kippu-deb.XXXXXX")
bpid=""
cleanup() { [ -n "$bpid" ] && kill "$bpid" 2>/dev/null; [ "${KP_KEEP_TMP:-0}" = 1 ] || rm -rf "$T"; }
trap cleanup EXIT
trap 'exit 1' INT TERM
WAIT=60
PKGS="kippu-terminal kippu-backend kippu-tools kippu-dev-tools"
# lintian warnings the README lists ("Installing"): none now that every program has its man
# page; any warning fails.
LINTIAN_ALLOWED=""

echo "[==========] Running 6 test(s)."
# 1. The packages.
if [ -n "${KP_DEB_DIR:-}" ]; then
	D=$KP_DEB_DIR
elif kmake -s deb BUILD="$T/b" > "$T/deb.out" 2>&1; then
	D=$T/b/deb
else
	D=$T/b/deb; echo "    make deb failed:"; tail -n 20 "$T/deb.out"
fi
missing=""
for p in $PKGS; do
	set -- "$D/${p}"_*.deb
	[ -f "$1" ] || missing="$missing $p"
done
set -- "$D"/kippu_*.changes
if [ -z "$missing" ] && [ -f "$1" ]; then ok packages_built; else bad packages_built "missing:$missing .changes"; fi
CHANGES=$1

# 2. What lands where. deb PKG: PKG's .deb; has PKG FILE...: each FILE in PKG's tree.
deb() { set -- "$D/$1"_*.deb; echo "$1"; }
why=""
has() { p=$1; shift; for f in "$@"; do [ -e "$T/x/$p/$f" ] || why="$why $p lacks $f;"; done; }
for p in $PKGS; do mkdir -p "$T/x/$p" && dpkg -x "$(deb $p)" "$T/x/$p" || why="$why dpkg -x $p failed;"; done
has kippu-terminal usr/sbin/kippu-terminal lib/systemd/system/kippu-terminal.service \
	etc/kippu/terminal.conf usr/share/kippu/libnfc.conf usr/share/kippu/60-kippu-nfc.rules
has kippu-backend usr/sbin/kippu-backend lib/systemd/system/kippu-backend.service etc/kippu/backend.conf
has kippu-tools usr/bin/kippuctl usr/bin/kippu-loadgen usr/share/kippu/scenario.txt usr/share/kippu/load.txt
has kippu-dev-tools usr/bin/kippu-pn532-emu
for p in kippu-terminal kippu-backend kippu-tools; do
	[ -z "$(find "$T/x/$p" -name 'kippu-pn532-emu*')" ] || why="$why $p holds kippu-pn532-emu;"
done
for m in "$TOP"/tools/man/*.[158]; do              # each page, compressed, in some package
	[ -f "$m" ] || continue
	ls "$T"/x/*/usr/share/man/man"${m##*.}"/"${m##*/}".gz > /dev/null 2>&1 || why="$why no ${m##*/};"
done
for p in kippu-terminal kippu-backend; do
	c=$(dpkg-deb -I "$(deb $p)" conffiles 2>/dev/null)
	[ "$c" = "/etc/kippu/${p#kippu-}.conf" ] || why="$why $p conffiles: '$c';"
	dpkg-deb -I "$(deb $p)" postinst 2>/dev/null |
		grep -q 'adduser --quiet --system --group --home /var/lib/kippu --no-create-home kippu' ||
		why="$why $p postinst makes no user kippu;"
	dpkg-deb -f "$(deb $p)" Depends | grep -q 'adduser' || why="$why $p does not depend on adduser;"
done
dpkg-deb -f "$(deb kippu-terminal)" Depends | grep -q 'libnfc6' || why="$why kippu-terminal: no libnfc6 in Depends;"
dpkg-deb -f "$(deb kippu-backend)" Depends | grep -q 'libnfc' && why="$why kippu-backend depends on libnfc;"
# The packaged programs say the package's version (built from a copy without .git, so the
# Makefile's KP_RELEASE, which must equal debian/changelog's).
ver=$(dpkg-deb -f "$(deb kippu-tools)" Version)
got=$("$T/x/kippu-tools/usr/bin/kippuctl" --version 2>&1)
[ "$got" = "kippuctl (kippu) $ver" ] || why="$why kippuctl --version says '$got', the package is $ver;"
[ -z "$why" ] && ok package_contents || bad package_contents "$why"

# 3. lintian: no error, no warning outside the README's list.
lintian --no-cfg "$CHANGES" > "$T/lintian.out" 2>&1
sed 's/^/    lintian: /' "$T/lintian.out" | grep -v 'running with root privileges'
errors=$(grep -c '^E: ' "$T/lintian.out")
others=$(grep '^W: ' "$T/lintian.out" | sed 's/^W: [^:]*: \([^ ]*\).*/\1/' | sort -u |
	while read -r tag; do case " $LINTIAN_ALLOWED " in *" $tag "*) ;; *) echo "$tag" ;; esac; done)
if ! [ -f "$CHANGES" ]; then
	bad lintian "no .changes to check"
elif [ "$errors" -ne 0 ] || [ -n "$others" ]; then
	bad lintian "$errors error(s); warnings outside the README's list: $others"
else
	ok lintian
fi

# One root holding the four packages, as an installed system would.
R=$T/root
for p in $PKGS; do dpkg -x "$(deb $p)" "$R"; done
# execstart UNIT: the unit's ExecStart, its /usr/ and /etc/kippu/ paths moved into $R.
execstart() {
	sed -n 's/^ExecStart=//p' "$R/lib/systemd/system/$1" |
		sed -e "s| /etc/kippu/| $R/etc/kippu/|g" -e "s|^/usr/|$R/usr/|"
}
# conf PACKAGED OVERRIDES: the packaged example with every key that has a default set to it
# (uncommented), the keys of OVERRIDES (a `key = value` file) set to theirs instead.
conf() {
	awk -v ov="$2" '
		BEGIN { while ((getline l < ov) > 0) { split(l, a, " = "); set[a[1]] = l } }
		/^#[a-z_-]+ = ./ { k = substr($1, 2); if (!(k in set)) print substr($0, 2) }
		END { for (k in set) print set[k] }' "$1"
}
CTL=$R/usr/bin/kippuctl
S=$T/state                   # the state directory (WorkingDirectory=/var/lib/kippu)
mkdir -p "$S"
( cd "$S" && "$CTL" ca create --key ca.key --cert ca.crt &&
  "$CTL" terminal create --ca-key ca.key --ca-cert ca.crt --id BUS-OPA-0042 \
	--key terminal.key --cert terminal.crt &&
  "$CTL" backend create --ca-key ca.key --ca-cert ca.crt --key backend.key --cert backend.crt &&
  "$CTL" token-key create token.key &&
  "$CTL" load terminal.db "$R/usr/share/kippu/load.txt" --token-key token.key ) \
	> "$T/setup.out" 2>&1 || { echo "    setup failed:"; cat "$T/setup.out"; }

# service NAME: /etc/kippu/NAME.conf becomes the packaged example with its defaults set and
# the `key = value` lines on stdin instead of theirs; $cmd is kippu-NAME.service's ExecStart
# moved into $R. Fails when that ExecStart is not the one expected.
service() {
	cat > "$T/$1.ov"
	conf "$R/etc/kippu/$1.conf" "$T/$1.ov" > "$T/$1.conf" && mv "$T/$1.conf" "$R/etc/kippu/$1.conf"
	cmd=$(execstart "kippu-$1.service")
	[ "$cmd" = "$R/usr/sbin/kippu-$1 --config $R/etc/kippu/$1.conf" ]
}

# 4. The terminal's unit runs the packaged sample scenario to its end.
if ! service terminal <<OV
terminal_id = BUS-OPA-0042
operator = OP-A
reader = mock:$R/usr/share/kippu/scenario.txt
database = $S/terminal.db
key = $S/terminal.key
cert = $S/terminal.crt
token_key = $S/token.key
backend_ca = $S/ca.crt
backend_cert = $S/backend.crt
OV
then
	bad terminal_unit_runs "ExecStart: $cmd"
elif ! ( cd "$S" && $cmd > "$T/terminal.out" 2> "$T/terminal.err" ); then
	bad terminal_unit_runs "exit status not 0: $(tail -n 5 "$T/terminal.err")"
elif n=$("$CTL" journal list "$S/terminal.db" 2>&1 | grep -c .);
     ! "$CTL" journal verify "$S/terminal.db" --ca "$S/ca.crt" > "$T/verify.out" 2>&1 || [ "$n" -lt 10 ]; then
	bad terminal_unit_runs "journal: $n lines, $(cat "$T/verify.out")"
else
	ok terminal_unit_runs
fi

# 5. The backend's unit listens, then stops on SIGTERM with exit 0.
if ! service backend <<OV
listen = 127.0.0.1:0
db = $S/backend.db
ca = $S/ca.crt
cert = $S/backend.crt
key = $S/backend.key
OV
then
	bad backend_unit_runs "ExecStart: $cmd"
else
	( cd "$S" && exec $cmd > "$T/backend.out" 2> "$T/backend.err" ) &
	bpid=$!
	end=$(($(date +%s) + WAIT))
	until grep -q 'listening on 127.0.0.1:[1-9]' "$T/backend.out" 2>/dev/null; do
		kill -0 $bpid 2>/dev/null && [ "$(date +%s)" -lt $end ] || break
		sleep 0.1
	done
	if ! grep -q 'listening on' "$T/backend.out"; then
		bad backend_unit_runs "never listened: $(tail -n 5 "$T/backend.err")"
	else
		kill -TERM $bpid
		wait $bpid
		rc=$?
		bpid=""
		[ $rc -eq 0 ] && ok backend_unit_runs ||
			bad backend_unit_runs "exit $rc after SIGTERM: $(tail -n 3 "$T/backend.err")"
	fi
fi

# 6. The Makefile's pkg-config modules come from packages debian/control builds with.
missing=""
for m in $(sed -n 's/.*pc_\(cflags\|libs\),\([^)]*\)).*/\2/p' "$TOP/Makefile" | tr ' ' '\n' | sort -u); do
	[ "$m" = cmocka ] && continue                   # the tests' only
	pkg=$(dpkg -S "$(pkg-config --variable=pcfiledir "$m")/$m.pc" 2>/dev/null | cut -d: -f1)
	[ -n "$pkg" ] && grep -q "^ *$pkg,\?$\|Build-Depends:.* $pkg\b" "$TOP/debian/control" ||
		missing="$missing $m(${pkg:-no package})"
done
[ -z "$missing" ] && ok build_depends_complete || bad build_depends_complete "not in Build-Depends:$missing"

finish "Debian packages"
