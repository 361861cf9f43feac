#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# kill -9 at random moments (README, "Reliability"): tests/store/killcampaign.py runs the
# real kippu-backend and two kippu-terminal over loopback and kills a terminal in its taps,
# syncs and bundle applies, and the backend in its ingest and bundle builds, then checks
# the invariants after each point (integrity, journal verify, no shown tap missing,
# nothing charged twice, the backend holding each journaled record once). A short campaign
# here (KP_KILL_POINTS, default 50); `make reliability` runs 1,000 points. The seed is
# printed; KP_KILL_SEED=N replays it. Needs python3.
KP_BIN=${KP_BIN:-build/bin}
case "$KP_BIN" in /*) ;; *) KP_BIN=$(pwd)/$KP_BIN ;; esac
HERE=$(cd "$(dirname "$0")" && pwd)
T=$(mktemp -d "${TMPDIR:-/tmp}/kippu-kill.XXXXXX")
. "$HERE/../shtest.sh"
trap 'rm -rf "$T"' EXIT
trap 'exit 1' INT TERM
if python3 "$HERE/killcampaign.py" "$KP_BIN" "$T/w" "${KP_KILL_POINTS:-50}" > "$T/out" 2>&1
then ok kill_campaign; else bad kill_campaign "$(grep -v '^kill campaign seed' "$T/out" | tail -n 5)"; fi
cat "$T/out"
finish test_kill.sh
