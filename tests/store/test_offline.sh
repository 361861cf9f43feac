#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Long offline (README, "Reliability"): tests/store/longoffline.py generates days of taps on
# the mock reader's virtual clock (passes expiring, a denylist aging, service days turning),
# runs the real kippu-terminal offline through them sampling its RSS and WAL, then syncs
# once with the real kippu-backend: every record accepted, the journal verifying, nothing
# charged twice, memory flat, the WAL bounded. Here a day of 5,000 taps by 1,000 cards
# (KP_OFFLINE_DAYS, KP_OFFLINE_TAPS, KP_OFFLINE_CARDS); `make reliability` runs a week of
# 100,000 taps by 5,000 cards. Needs python3.
KP_BIN=${KP_BIN:-build/bin}
case "$KP_BIN" in /*) ;; *) KP_BIN=$(pwd)/$KP_BIN ;; esac
HERE=$(cd "$(dirname "$0")" && pwd)
T=$(mktemp -d "${TMPDIR:-/tmp}/kippu-offline.XXXXXX")
. "$HERE/../shtest.sh"
trap 'rm -rf "$T"' EXIT
trap 'exit 1' INT TERM
if python3 "$HERE/longoffline.py" "$KP_BIN" "$T/w" "${KP_OFFLINE_DAYS:-1}" \
	"${KP_OFFLINE_TAPS:-5000}" "${KP_OFFLINE_CARDS:-1000}" > "$T/out" 2>&1
then ok long_offline; else bad long_offline "$(tail -n 5 "$T/out")"; fi
cat "$T/out"
finish test_offline.sh
