# SPDX-License-Identifier: Apache-2.0
# Sourced by tools/demo.sh: what the scheme sells, set up at the backend with kippuctl.
# $CTL is kippuctl, $DB the backend database; cards are given by IDm and stored as tokens.
$CTL backend operator $DB OP-A "Kansai Demo Bus"
$CTL backend operator $DB OP-B "Kansai Demo Rail"
$CTL backend operator $DB OP-C "Gunma Demo Bus"
$CTL backend product $DB P10 10 OP-A,OP-B "10 rides, bus and rail"
$CTL backend product $DB P2 2 OP-A,OP-B "2 rides, bus and rail"
$CTL backend product $DB PC 5 OP-C "5 rides, Gunma bus only"
for c in alice:0101020304050607 bob:01010203040506A0 carol:01010203040506B0 \
         dave:01010203040506C0 erin:01010203040506D0; do
	$CTL backend card $DB felica:${c#*:} --label ${c%%:*} --token-key token.key
done
$CTL backend sell $DB felica:0101020304050607 P10 2026-11-01T00:00:00+09:00 2026-12-01T04:00:00+09:00 --token-key token.key
$CTL backend sell $DB felica:01010203040506A0 P2  2026-11-01T00:00:00+09:00 2026-12-01T04:00:00+09:00 --token-key token.key
$CTL backend sell $DB felica:01010203040506B0 P10 2026-10-01T00:00:00+09:00 2026-11-25T04:00:00+09:00 --token-key token.key
$CTL backend sell $DB felica:01010203040506D0 PC  2026-11-01T00:00:00+09:00 2026-12-01T04:00:00+09:00 --token-key token.key
$CTL backend deny $DB felica:01010203040506C0 "reported lost" --token-key token.key
