#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The results of `make demo` (its output on stdin) without what differs from run to run: card
# tokens (a new token key each run), the backend's port, durations, config versions (the
# backend's clock in ms, so that they never go back), and the time the backend
# decided a link request (its own clock). What riders saw, each terminal's totals, the records,
# ledger, linkages, fares and verifications stay, and are the same at any date.
sed -E -e 's/[0-9A-Fa-f]{32}/<token>/g' \
       -e 's/card [0-9a-f]{8}\.\./card <token>../g' \
       -e 's/127\.0\.0\.1:[0-9]+/127.0.0.1:<port>/g' \
       -e 's/ in [0-9]+ ms/ in <n> ms/g' \
       -e 's/config (applied|unchanged at) version [0-9]+/config \1 version <v>/g' \
       -e 's/^(.* (accepted|refused) +[a-z -]+ +)[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z *$/\1<decided at>/' \
       -e 's/^(Everything the demo made is in ).*/\1<dir>/'
