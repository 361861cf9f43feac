#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# make check-deps: proves the dependency rules of the folders (README, "Layout").
#   1. includes: each folder's compile flags (the Makefile's INC_<folder>, passed in the
#      environment) reach exactly the public headers of the folders the rules allow: a probe
#      including another folder's header compiles when allowed and fails when not;
#   2. private headers: a file includes headers of its own folder, or kp_*.h headers of an
#      allowed folder, nothing else;
#   3. symbols: every kp_ symbol a folder's library uses is defined in its own library or
#      in one it may use (nm);
#   4. programs: kippu-terminal holds no backend code, kippu-backend no HAL, card, store or
#      libnfc code and does not link libnfc;
#   6. licence: every source file carries "SPDX-License-Identifier: Apache-2.0" at its top
#      (5, function length, is tools/check_funclen.py).
# Usage: check_deps.sh BUILD_DIR (run from the top of the tree).
set -u
BUILD=${1:?usage: check_deps.sh BUILD_DIR}
CC=${CC:-cc}
fail=0
bad() { echo "check-deps: $*" >&2; fail=1; }

# folder | its directory | its public header | the folders it may use (transitively)
RULES='sys|hal/sys|kp_sys.h|
hal|hal|kp_hal.h|
crypto|crypto|kp_crypto.h|
proto|backend-sync/proto|kp_proto.h|crypto
client|backend-sync/client|kp_client.h|proto crypto
backend|backend-sync/backend|kp_backend.h|proto crypto sys
card|terminal/card|kp_card.h|hal proto crypto
store|terminal/store|kp_store.h|card hal proto crypto sys
fare|terminal/fare|kp_fare.h|store card hal proto crypto sys
tap|terminal/tap|kp_tap.h|fare store card hal proto crypto sys
console|terminal/console|kp_console.h|tap fare store card hal proto crypto sys
app|terminal/app|kp_app.h|console tap fare store card client hal proto crypto sys
tools|tools|kp_tools.h|app console tap fare store card backend client hal proto crypto sys'

field() { echo "$RULES" | awk -F'|' -v f="$1" -v n="$2" '$1 == f { print $n }'; }
FOLDERS=$(echo "$RULES" | cut -d'|' -f1)
allows() { # folder other -> 0 when folder may use other
	[ "$1" = "$2" ] && return 0
	for u in $(field "$1" 4); do [ "$u" = "$2" ] && return 0; done
	return 1
}
folder_of_dir() { echo "$RULES" | awk -F'|' -v d="$1" '$2 == d { print $1 }'; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/kippu-deps-XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# 1. the compiler enforces the rules
probes=0
for f in $FOLDERS; do
	flags=$(printenv "INC_$f")
	[ -n "$flags" ] || { bad "no INC_$f in the environment (run it from make check-deps)"; continue; }
	for g in $FOLDERS; do
		printf '#include "%s"\nint kp_probe;\n' "$(field "$g" 3)" > "$tmp/probe.c"
		# shellcheck disable=SC2086
		if $CC -std=c11 -D_GNU_SOURCE -fsyntax-only $flags $PROBE_CFLAGS "$tmp/probe.c" \
		   > "$tmp/out" 2>&1; then ok=1; else ok=0; fi
		probes=$((probes + 1))
		if allows "$f" "$g"; then
			[ $ok = 1 ] || bad "$f may include $(field "$g" 3) but it does not compile: $(head -n 1 "$tmp/out")"
		else
			[ $ok = 0 ] || bad "$f must not include $(field "$g" 3) ($f may use: $(field "$f" 4)), yet its flags reach it"
		fi
	done
done

# 2. private headers stay in their folder
for f in $FOLDERS; do
	d=$(field "$f" 2)
	for src in "$d"/*.c "$d"/*.h; do
		[ -e "$src" ] || continue
		for h in $(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$src"); do
			[ -e "$d/$h" ] && continue
			owner=""
			for g in $FOLDERS; do
				[ -e "$(field "$g" 2)/$h" ] && owner=$g
			done
			if [ -z "$owner" ]; then
				bad "$src includes \"$h\", which no folder holds"
			elif ! allows "$f" "$owner"; then
				bad "$src includes $owner's \"$h\" ($f may use: $(field "$f" 4))"
			else
				case $h in kp_*.h) ;; *) bad "$src includes $owner's private header \"$h\"" ;; esac
			fi
		done
	done
done

# 3. symbols: what each library uses comes from itself or from a folder it may use
for f in $FOLDERS; do
	lib="$BUILD/lib/libkp$f.a"
	[ -f "$lib" ] || { bad "$lib missing (build it first)"; continue; }
	nm -g --defined-only "$lib" 2>/dev/null | awk -v f="$f" 'NF == 3 && $3 ~ /^kp_/ { print $3, f }' >> "$tmp/defs"
done
sort -u "$tmp/defs" > "$tmp/defs.sorted"
for f in $FOLDERS; do
	lib="$BUILD/lib/libkp$f.a"
	[ -f "$lib" ] || continue
	nm -u "$lib" 2>/dev/null | awk '$2 ~ /^kp_/ { print $2 }' | sort -u > "$tmp/undef"
	join "$tmp/undef" "$tmp/defs.sorted" > "$tmp/uses"
	while read -r sym owner; do
		allows "$f" "$owner" || bad "$f uses $sym of $owner ($f may use: $(field "$f" 4))"
	done < "$tmp/uses"
done

# 4. the programs hold only what their rules allow
syms_of() { nm --defined-only "$BUILD/bin/$1" 2>/dev/null | awk '{ print $3 }' | sort -u; }
lib_syms() { nm -g --defined-only "$BUILD/lib/libkp$1.a" 2>/dev/null | awk 'NF == 3 { print $3 }' | sort -u; }
for p in kippu-terminal kippu-backend; do
	[ -x "$BUILD/bin/$p" ] || bad "$BUILD/bin/$p missing (build it first)"
done
syms_of kippu-terminal > "$tmp/term"
lib_syms backend > "$tmp/be"
n=$(comm -12 "$tmp/term" "$tmp/be" | wc -l)
[ "$n" = 0 ] || bad "kippu-terminal holds $n symbols of the backend: $(comm -12 "$tmp/term" "$tmp/be" | head -n 3 | tr '\n' ' ')"
syms_of kippu-backend > "$tmp/back"
for g in hal card store fare tap console app client; do
	lib_syms "$g" > "$tmp/g"
	n=$(comm -12 "$tmp/back" "$tmp/g" | wc -l)
	[ "$n" = 0 ] || bad "kippu-backend holds $n symbols of $g: $(comm -12 "$tmp/back" "$tmp/g" | head -n 3 | tr '\n' ' ')"
done
if readelf -d "$BUILD/bin/kippu-backend" | grep -q 'libnfc'; then
	bad "kippu-backend links libnfc"
fi

# 6. every source file names its licence (SPDX) near its top
for src in $(find hal crypto backend-sync terminal tools tests .ci -type f \( -name '*.c' -o \
             -name '*.h' -o -name '*.sh' -o -name '*.py' -o -name '*.def' -o -name run \) \
             -not -path 'tests/data/*' 2>/dev/null) Makefile; do
	head -n 3 "$src" | grep -q 'SPDX-License-Identifier: Apache-2.0' ||
		bad "$src has no \"SPDX-License-Identifier: Apache-2.0\" in its first lines"
done

if [ $fail = 0 ]; then
	echo "check-deps: ok ($probes include probes over $(echo "$FOLDERS" | wc -l) folders, private headers, library symbols, kippu-terminal without backend code, kippu-backend without HAL/card/store code or libnfc, SPDX identifiers)"
fi
exit $fail
