# SPDX-License-Identifier: Apache-2.0
# kippu — one non-recursive Makefile. User CFLAGS/LDFLAGS are left to the user;
# project flags live in KP_CFLAGS. `make SANITIZE=1 ...` builds with ASan+UBSan in build-san/.
PREFIX    ?= /usr/local
DESTDIR   ?=
CC        ?= cc
SANITIZE  ?= 0
DEMO_DIR  ?=
BENCH_JSON ?=

# `make` builds in parallel on the machine's cores unless a -j is given (`make -j1` for one).
# Only the top-level make sets it: a sub-make ($(MAKE) in a recipe) shares its parent's job
# slots, and setting -j there again would reset them ("-j2 forced in makefile").
ifeq ($(MAKELEVEL),0)
ifeq ($(filter -j%,$(MAKEFLAGS)),)
MAKEFLAGS += -j$(shell nproc 2>/dev/null || echo 1)
endif
endif

# `make fuzz` builds the fuzz targets (tests/fuzz/) with clang in build-fuzz/: this Makefile
# again, with FUZZ=1 (the libraries instrumented for libFuzzer, ASan and UBSan).
FUZZ      ?= 0
ifeq ($(FUZZ),1)
BUILD     ?= build-fuzz
SANFLAGS  := -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer \
             -fno-sanitize-recover=undefined
# clang (not gcc) warns of `{ { NULL } }` ending a table: zero-filling is what C says.
FUZZ_WFLAGS := -Wno-missing-field-initializers
else ifeq ($(SANITIZE),1)
BUILD     ?= build-san
SANFLAGS  := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else
BUILD     ?= build
SANFLAGS  :=
endif

# Debian packages the build, tests and demo need (installed by `make deps`, only when missing).
DEB_PKGS := gcc make binutils libc6-dev pkg-config libnfc-dev libnfc-bin libmbedtls-dev libsqlite3-dev \
            libcmocka-dev libcbor-dev python3 openssl sqlite3 libncurses-dev libjansson-dev tmux \
            faketime tzdata man-db systemd build-essential debhelper dpkg-dev fakeroot lintian \
            libzip-dev libmicrohttpd-dev libsystemd-dev libpq-dev postgresql-15 postgresql-client-15 \
            libjs-chart.js fonts-noto-cjk chromium clang libclang-rt-14-dev python3-cbor2 \
            python3-cryptography

# Recursive (=) so pkg-config runs only when a recipe needs it, after `deps` has run.
pc_cflags = $(shell pkg-config --cflags $(1) 2>/dev/null)
pc_libs   = $(shell pkg-config --libs $(1) 2>/dev/null)
MBED_LIBS := -lmbedtls -lmbedx509 -lmbedcrypto

KP_CFLAGS := -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter \
             -MMD -MP $(SANFLAGS) $(FUZZ_WFLAGS)
KP_LDFLAGS := $(SANFLAGS)

# ---- the folders and the dependency rules of ../shared/DESIGN.md ----
# Each folder builds one static library from its .c files (programs' mains apart) and sees
# only its own headers and those of the folders it may depend on: an include across a rule
# fails to compile. `make check-deps` proves the same of the linked programs.
#   folder             may use                              outside libraries
#   sys (hal/sys)      -                                    libsystemd
#   hal                -                                    libnfc
#   crypto             -                                    mbedTLS
#   proto              crypto                               libcbor
#   client             proto                                -
#   db                 -                                    SQLite, libpq (PostgreSQL)
#   backend            proto, sys, db                       SQLite, libcbor, libmicrohttpd
#   analytics          db, proto                            - (reads the backend's database
#                                                           through db, read-only)
#   card               hal, proto (constants, error text)   -
#   store              card, sys                            SQLite
#   fare               store                                SQLite (its GTFS tables)
#   tap                fare                                 -
#   console            tap                                  ncursesw, jansson
#   app                console, client, sys                 -
#   tools              app, backend, analytics (and sys)    jansson (listings as JSON), libzip
uniq = $(if $(1),$(firstword $(1)) $(call uniq,$(filter-out $(firstword $(1)),$(1))))
INC_sys     := -Ihal/sys
INC_hal     := -Ihal
INC_crypto  := -Icrypto
INC_proto   := -Ibackend-sync/proto $(INC_crypto)
INC_client  := -Ibackend-sync/client $(INC_proto)
INC_db      := -Ibackend-sync/db
INC_backend := -Ibackend-sync/backend $(INC_proto) $(INC_sys) $(INC_db)
INC_analytics := -Ibackend-sync/analytics $(INC_db) $(INC_proto)
INC_card    := -Iterminal/card $(INC_hal) $(INC_proto)
INC_store   := -Iterminal/store $(INC_card) $(INC_sys)
INC_fare    := -Iterminal/fare $(INC_store)
INC_tap     := -Iterminal/tap $(INC_fare)
INC_console := -Iterminal/console $(INC_tap)
INC_app     := $(call uniq,-Iterminal/app $(INC_console) $(INC_client) $(INC_sys))
INC_tools   := $(call uniq,-Itools $(INC_app) $(INC_backend) $(INC_analytics))
INC_tests   := $(call uniq,-Itests $(INC_tools))

DIR_sys     := hal/sys
DIR_hal     := hal
DIR_crypto  := crypto
DIR_proto   := backend-sync/proto
DIR_client  := backend-sync/client
DIR_db      := backend-sync/db
DIR_backend := backend-sync/backend
DIR_analytics := backend-sync/analytics
DIR_card    := terminal/card
DIR_store   := terminal/store
DIR_fare    := terminal/fare
DIR_tap     := terminal/tap
DIR_console := terminal/console
DIR_app     := terminal/app
DIR_tools   := tools
FOLDERS     := sys hal crypto proto client db backend analytics card store fare tap console app tools
MAINS       := backend-sync/backend/main.c terminal/app/main.c tools/kippuctl.c tools/pn532_emu.c \
               tools/kippu_loadgen.c

PC_sys      = $(call pc_cflags,libsystemd)
PC_hal      = $(call pc_cflags,libnfc)
PC_proto    = $(call pc_cflags,libcbor)
PC_db       = $(call pc_cflags,sqlite3 libpq)
PC_backend  = $(call pc_cflags,sqlite3 libcbor libmicrohttpd)
PC_store    = $(call pc_cflags,sqlite3 libsystemd)
PC_fare     = $(call pc_cflags,sqlite3)
PC_console  = $(call pc_cflags,ncursesw jansson)
PC_tools    = $(call pc_cflags,jansson libzip)
PC_tests    = $(call pc_cflags,libnfc sqlite3 cmocka libcbor ncursesw jansson libsystemd)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
lib = $(BUILD)/lib/libkp$(1).a
SRC_OF = $(filter-out $(MAINS),$(wildcard $(DIR_$(1))/*.c))

# Per-object flags: the folder's includes and outside libraries' cflags.
$(foreach f,$(FOLDERS),$(eval $(call obj,$(wildcard $(DIR_$(f))/*.c)): FOLDER_CFLAGS = $$(INC_$(f)) $$(PC_$(f))))
$(BUILD)/obj/tests/%.o: FOLDER_CFLAGS = $(INC_tests) $(PC_tests)

define mklib
$(call lib,$(1)): $(call obj,$(call SRC_OF,$(1)))
	@mkdir -p $$(dir $$@)
	rm -f $$@ && ar rcs $$@ $$^
endef
$(foreach f,$(FOLDERS),$(eval $(call mklib,$(f))))

# What each program links, dependants first; outside libraries after.
LINK_backend  := $(foreach f,backend db proto crypto sys,$(call lib,$(f)))
LINK_terminal := $(foreach f,app console tap fare store card client proto hal crypto sys,$(call lib,$(f)))
LINK_tools    := $(call lib,tools) $(foreach f,app console tap fare store card backend analytics db client proto hal crypto sys,$(call lib,$(f)))
# libpq only where backend-sync/db's PostgreSQL code is linked in (the backend's store, with
# a postgresql:// database: README, "PostgreSQL").
PQ_LIBS        = -Wl,--as-needed $(call pc_libs,libpq) -Wl,--no-as-needed
LIBS_backend   = $(call pc_libs,sqlite3 libcbor libmicrohttpd libsystemd) $(PQ_LIBS) $(MBED_LIBS) -lpthread -lm
LIBS_terminal  = $(call pc_libs,libnfc sqlite3 libcbor ncursesw jansson libsystemd) $(MBED_LIBS) -lpthread -lm
LIBS_tools     = $(LIBS_terminal) $(call pc_libs,libzip) $(PQ_LIBS)
CMOCKA_LIBS    = $(call pc_libs,cmocka)

# The version every program prints (--version): `git describe --tags --always --dirty` in a git
# checkout, else (a release tarball, or no git installed) KP_RELEASE. It goes into a generated
# header that is rewritten only when its text changes, so a new commit rebuilds the four mains
# that include it, not the libraries.
KP_RELEASE := 0.2.0
GEN := $(BUILD)/gen
$(GEN)/kp_version.h: FORCE
	@mkdir -p $(dir $@)
	@v=""; if [ -e .git ] && command -v git >/dev/null 2>&1; then \
	  v=$$(git describe --tags --always --dirty 2>/dev/null); v=$${v#v}; fi; \
	case "$$v" in '' | *[!0-9A-Za-z._+-]*) v='$(KP_RELEASE)' ;; esac; \
	printf '/* Generated by the Makefile: do not edit. */\n#define KP_VERSION "%s"\n' "$$v" > $@.tmp; \
	if cmp -s $@.tmp $@; then rm -f $@.tmp; else mv -f $@.tmp $@; fi
.PHONY: FORCE
FORCE:
$(call obj,$(MAINS)): $(GEN)/kp_version.h
$(call obj,$(MAINS)): FOLDER_CFLAGS += -I$(GEN)

PROGS := $(BUILD)/bin/kippu-terminal $(BUILD)/bin/kippuctl $(BUILD)/bin/kippu-backend \
         $(BUILD)/bin/kippu-pn532-emu $(BUILD)/bin/kippu-loadgen
# Tests mirror the layout: tests/<folder>/test_*.c, one program each, built as
# $(BUILD)/tests/test_*; helpers shared by the tests (testutil.h, fixtures.c, bench_*.h) and
# test data (tests/data/) sit beside the folders.
TEST_SRC := $(wildcard tests/*/test_*.c)
TESTS := $(foreach t,$(TEST_SRC),$(BUILD)/tests/$(basename $(notdir $(t))))
# Tests that run the real programs from a shell script (tests/run.sh runs them with sh).
SHELL_TESTS := $(wildcard tests/*/test_*.sh)
# test_deb.sh builds the Debian packages, which never carry sanitizers: `make test` runs it,
# `make test SANITIZE=1` does not build them a second time.
ifeq ($(SANITIZE),1)
SHELL_TESTS := $(filter-out tests/tools/test_deb.sh,$(SHELL_TESTS))
endif
# The benches: tests/bench*.c -> kippu-bench*, each a program of its own.
BENCH_NAMES := bench bench_sync bench_libnfc bench_jpki bench_fares bench_delta bench_ridership
BENCHES := $(foreach b,$(BENCH_NAMES),$(BUILD)/bin/kippu-$(subst _,-,$(b)))

.PHONY: all deps test check check-deps test-dates reliability demo bench clean install install-dev-tools deb \
        fuzz fuzz-run
all: $(PROGS)

deps:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "deps: all Debian packages present"; fi

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(KP_CFLAGS) $(FOLDER_CFLAGS) $(CFLAGS) -c $< -o $@

define mkprog
$(BUILD)/bin/$(1): $(call obj,$(2)) $(LINK_$(3))
	@mkdir -p $$(dir $$@)
	$$(CC) $$(KP_LDFLAGS) $$(LDFLAGS) -o $$@ $$< $(LINK_$(3)) $$(LIBS_$(3))
endef
$(eval $(call mkprog,kippu-terminal,terminal/app/main.c,terminal))
$(eval $(call mkprog,kippu-backend,backend-sync/backend/main.c,backend))
$(eval $(call mkprog,kippuctl,tools/kippuctl.c,tools))
# The PN532 emulator drives the mock HAL's card models through the public HAL API only.
$(eval $(call mkprog,kippu-pn532-emu,tools/pn532_emu.c,tools))
# N simulated terminals against a running backend (README, "Load generator").
$(eval $(call mkprog,kippu-loadgen,tools/kippu_loadgen.c,tools))
$(foreach b,$(BENCH_NAMES),$(eval $(call mkprog,kippu-$(subst _,-,$(b)),tests/$(b).c,tools)))

# Unit tests of the lower folders link only what they test (tests/hal/test_hal_*,
# tests/crypto/, tests/proto/), so each folder's tests build while the folders above it
# change; the others link everything (as the tools do).
test_layer = $(if $(filter test_sys test_sys_%,$(1)),sys,$(if $(filter test_hal_%,$(1)),hal,$(if $(filter test_crypto test_crypto_%,$(1)),crypto,$(if $(filter test_record test_record_%,$(1)),proto,upper))))
LINK_test_sys    := $(call lib,sys)
LIBS_test_sys     = $(call pc_libs,libsystemd)
LINK_test_hal    := $(call lib,hal)
LIBS_test_hal     = $(call pc_libs,libnfc) -lpthread
LINK_test_crypto := $(call lib,crypto)
LIBS_test_crypto  = $(MBED_LIBS) -lpthread
LINK_test_proto  := $(foreach f,client proto crypto,$(call lib,$(f)))
LIBS_test_proto   = $(call pc_libs,libcbor) $(MBED_LIBS) -lpthread -lm
LINK_test_upper  := $(LINK_tools)
LIBS_test_upper   = $(LIBS_tools)
define mktest
$(BUILD)/tests/$(basename $(notdir $(1))): $(call obj,$(1)) $(LINK_test_$(2))
	@mkdir -p $$(dir $$@)
	$$(CC) $$(KP_LDFLAGS) $$(LDFLAGS) -o $$@ $$(filter %.o,$$^) $(LINK_test_$(2)) $$(LIBS_test_$(2)) $$(CMOCKA_LIBS)
endef
$(foreach t,$(TEST_SRC),$(eval $(call mktest,$(t),$(call test_layer,$(basename $(notdir $(t)))))))
# Test helpers with a .c of their own, linked into the tests that use them.
$(BUILD)/tests/test_powercut: $(call obj,tests/store/crashvfs.c)
$(BUILD)/tests/test_hostile_net: $(call obj,tests/faultproxy.c)
$(addprefix $(BUILD)/tests/,test_stored test_tap test_pass test_fare_engine test_console): \
  $(call obj,tests/fixtures.c)

# `test` installs what is missing, then builds and runs every test program.
test: deps
	@$(MAKE) --no-print-directory check

# `make deb check` builds the packages once: test_deb.sh takes them from $(BUILD)/deb.
# The programs run KP_TEST_JOBS at a time (the machine's cores), the longest first so that
# none of them starts last (tests/run.sh).
KP_TEST_JOBS ?= $(shell nproc 2>/dev/null || echo 1)
TESTS_FIRST := $(filter %/test_sync %/test_hostile_net %/test_libnfc %/test_deb.sh %/test_console_tmux.sh %/test_kill.sh,$(TESTS) $(SHELL_TESTS))
check: $(PROGS) $(TESTS) check-deps $(filter deb,$(MAKECMDGOALS))
	@KP_BIN=$(BUILD)/bin KP_TESTS=$(BUILD)/tests KP_TEST_JOBS=$(KP_TEST_JOBS) \
	  $(if $(filter deb,$(MAKECMDGOALS)),KP_DEB_DIR=$(DEB_OUT)) \
	  sh tests/run.sh $(TESTS_FIRST) $(filter-out $(TESTS_FIRST),$(TESTS) $(SHELL_TESTS))

# The dependency rules of the folders (tools/check_deps.sh): includes, private headers,
# library symbols and what each program links; and no function longer than 150 lines outside
# the tests (tools/check_funclen.py).
check-deps: $(PROGS) $(foreach f,$(FOLDERS),$(call lib,$(f)))
	@$(foreach f,$(FOLDERS),INC_$(f)='$(INC_$(f))') PROBE_CFLAGS='$(PC_tests)' CC='$(CC)' \
	  sh tools/check_deps.sh $(BUILD)
	@python3 tools/check_funclen.py --limit 150 hal crypto backend-sync terminal tools

# The demo and the test programs that read the wall clock or make certificates, under
# faketime at 2027-03-01 09:00 JST, 2030-12-31 23:59:30 UTC and 2036-02-29 12:00 UTC, each in
# another time zone (tests/dates.sh): nothing may depend on today's date.
DATE_TESTS := $(addprefix $(BUILD)/tests/,test_ctl_jpki test_jpki test_hal_jpki test_linkage \
              test_sync test_integration test_libnfc test_bus_distance test_stored test_pass \
              test_crypto_rsa test_crypto_tls test_bundle_fares test_tap) tests/console/test_console_tmux.sh
test-dates: deps
	@$(MAKE) --no-print-directory $(PROGS) $(filter $(BUILD)/%,$(DATE_TESTS))
	@KP_BIN=$(BUILD)/bin KP_TESTS=$(BUILD)/tests sh tests/dates.sh $(DATE_TESTS)

# The long versions of the reliability campaigns (README, "Reliability"); `make test` runs
# short ones. kill -9 at 1,000 points (tests/store/test_kill.sh; KP_KILL_SEED=N replays a
# campaign) and a week offline of 100,000 taps by 5,000 cards (tests/store/test_offline.sh).
reliability: deps
	@$(MAKE) --no-print-directory $(PROGS)
	@KP_BIN=$(BUILD)/bin KP_KILL_POINTS=1000 KP_KILL_TAPS=12 KP_KILL_VERIFY_EVERY=200 \
	  sh tests/store/test_kill.sh
	@KP_BIN=$(BUILD)/bin KP_OFFLINE_DAYS=7 KP_OFFLINE_TAPS=100000 KP_OFFLINE_CARDS=5000 \
	  KP_OFFLINE_SYNC_WAL_MAX_KB=2048 sh tests/store/test_offline.sh

demo: deps
	@$(MAKE) --no-print-directory $(PROGS)
	@KP_BIN=$(BUILD)/bin DEMO_DIR="$(DEMO_DIR)" BACKEND="$(BACKEND)" sh tools/demo.sh

# kippu-bench: tap latency; kippu-bench-sync: backend ingest against the machine's ES256
# verify rate (works in a fresh folder under $(BUILD)/bench, removed after);
# kippu-bench-libnfc: card presence -> decision through libnfc and kippu-pn532-emu (a small
# store of its own in $(BUILD)/bench-libnfc, removed after); kippu-bench-jpki: a My Number
# card's arrival -> decision on the mock HAL (its own CA, cards and store in
# $(BUILD)/bench-jpki, removed after); tests/bench_loadgen.sh: a real kippu-backend process
# (SQLite, in $(BUILD)/bench-loadgen, removed after) loaded by kippu-loadgen with 50 terminals.
# With BENCH_JSON=path,
# kippu-bench writes its JSON array there and the others add their figures to the same
# array (--json-append), so one file holds them all.
bench: deps
	@$(MAKE) --no-print-directory $(BENCHES) $(PROGS)
	@$(BUILD)/bin/kippu-bench --dir $(BUILD)/bench $(if $(BENCH_JSON),--json $(BENCH_JSON))
	@$(BUILD)/bin/kippu-bench-sync --dir $(BUILD)/bench $(if $(BENCH_JSON),--json-append $(BENCH_JSON))
	@$(BUILD)/bin/kippu-bench-libnfc --dir $(BUILD)/bench-libnfc $(if $(BENCH_JSON),--json-append $(BENCH_JSON))
	@$(BUILD)/bin/kippu-bench-jpki --dir $(BUILD)/bench-jpki $(if $(BENCH_JSON),--json-append $(BENCH_JSON))
	@$(BUILD)/bin/kippu-bench-fares --dir $(BUILD)/bench-fares $(if $(BENCH_JSON),--json-append $(BENCH_JSON))
	@$(BUILD)/bin/kippu-bench-delta --dir $(BUILD)/bench-delta $(if $(BENCH_JSON),--json-append $(BENCH_JSON))
	@KP_BIN=$(BUILD)/bin sh tests/bench_loadgen.sh $(BUILD)/bench-loadgen $(BENCH_JSON)
	@$(BUILD)/bin/kippu-bench-ridership --dir $(BUILD)/bench-ridership $(if $(BENCH_JSON),--json-append $(BENCH_JSON))

# ---- fuzzing (README, Tests, "Fuzzing") ----
# tests/fuzz/fuzz_*.c: one libFuzzer target each, built by clang in build-fuzz/ with the
# project's libraries instrumented (FUZZ=1 above). `make fuzz` runs each for FUZZ_SECONDS
# from its seed corpus (tests/fuzz/corpus/<target>/; new entries go to
# build-fuzz/fuzz/corpus/<target>/, never into the tree) and fails on any crash, leak,
# timeout or sanitizer report, naming the target and the reproducer. Then the differential
# checks: the CBOR reader against python3-cbor2 and COSE_Sign1 verification against
# python3-cryptography (tests/fuzz/diff_check.py, on the corpora and generated inputs).
FUZZ_SECONDS ?= 15
FUZZ_SRC  := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS := $(foreach t,$(FUZZ_SRC),$(BUILD)/fuzz/$(basename $(notdir $(t))))
$(foreach t,$(FUZZ_SRC),$(eval $(BUILD)/fuzz/$(basename $(notdir $(t))): $(call obj,$(t) tests/fuzz/fuzzutil.c) $(LINK_tools)))
# fuzz_pn532 and fuzz_backend_config include a program's main file (tools/pn532_emu.c,
# backend-sync/backend/main.c), which includes the generated version header.
$(call obj,tests/fuzz/fuzz_pn532.c tests/fuzz/fuzz_backend_config.c): $(GEN)/kp_version.h
$(call obj,tests/fuzz/fuzz_pn532.c tests/fuzz/fuzz_backend_config.c): FOLDER_CFLAGS += -I$(GEN)
$(BUILD)/fuzz/%:
	@mkdir -p $(dir $@)
	$(CC) $(KP_LDFLAGS) -fsanitize=fuzzer $(LDFLAGS) -o $@ $(filter %.o,$^) $(LINK_tools) $(LIBS_tools) \
	  $(LIBS_backend)
# The differential checks' driver over the project's decoder and verifier (tests/fuzz/diffdrv.c).
$(BUILD)/fuzz/kippu-diffdrv: $(call obj,tests/fuzz/diffdrv.c) $(LINK_test_proto)
	@mkdir -p $(dir $@)
	$(CC) $(KP_LDFLAGS) $(LDFLAGS) -o $@ $(filter %.o,$^) $(LINK_test_proto) $(LIBS_test_proto)

# The binary seeds of tests/fuzz/corpus/ (tests/fuzz/mkseeds.c says when to run it).
$(BUILD)/fuzz/kippu-fuzz-seeds: $(call obj,tests/fuzz/mkseeds.c) $(LINK_tools)
	@mkdir -p $(dir $@)
	$(CC) $(KP_LDFLAGS) $(LDFLAGS) -o $@ $(filter %.o,$^) $(LINK_tools) $(LIBS_tools)

# The key and certificate the signed seeds use are made here (BUILD/fuzz/data, by the plain
# build's kippuctl, valid 2026-01-01 + 100 years), never kept in the tree; the signed seeds
# are made with them into the run's corpus (kippu-fuzz-seeds, a one-shot maker: leaks not checked).
fuzz: deps
	@$(MAKE) --no-print-directory $(BUILD)/bin/kippuctl
	@$(MAKE) --no-print-directory FUZZ=1 CC=clang BUILD=build-fuzz \
	  KIPPUCTL=$(abspath $(BUILD)/bin/kippuctl) fuzz-run

FUZZ_DATA = $(BUILD)/fuzz/data
fuzz-run: $(FUZZ_BINS) $(BUILD)/fuzz/kippu-diffdrv $(BUILD)/fuzz/kippu-fuzz-seeds
	@rm -rf $(FUZZ_DATA) && mkdir -p $(FUZZ_DATA) && \
	  $(KIPPUCTL) ca create --key $(FUZZ_DATA)/fuzz-key.pem --cert $(FUZZ_DATA)/fuzz-cert.pem \
	  --cn "kippu fuzz" --not-before 2026-01-01T00:00:00Z --days 36500 > /dev/null
	@mkdir -p $(foreach t,$(FUZZ_BINS),$(BUILD)/fuzz/corpus/$(notdir $(t)))
	@ASAN_OPTIONS=detect_leaks=0 KP_FUZZ_DATA=$(FUZZ_DATA) $(BUILD)/fuzz/kippu-fuzz-seeds \
	  $(BUILD)/fuzz/corpus > /dev/null
	@KP_FUZZ_DATA=$(FUZZ_DATA) sh tests/fuzz/run.sh $(BUILD) $(FUZZ_SECONDS) $(FUZZ_BINS)
	@KP_FUZZ_DATA=$(FUZZ_DATA) /usr/bin/python3 tests/fuzz/diff_check.py $(BUILD)/fuzz/kippu-diffdrv \
	  tests/fuzz/corpus

# ---- install (README, "Installing") ----
# kippuctl and kippu-loadgen go to bindir; the daemons kippu-terminal and kippu-backend to sbindir (as Debian
# does for daemons); kippu-pn532-emu, a test tool, only with `make install-dev-tools`.
# Programs are stripped (STRIP= or INSTALL_STRIP= installs them unstripped: debian/rules
# leaves stripping to dh_strip, which keeps the symbols in -dbgsym packages).
# sysconfdir is /etc for PREFIX=/usr and $(PREFIX)/etc otherwise (GNU's default is always
# $(prefix)/etc); units go to /lib/systemd/system for PREFIX=/usr (Debian 12), else to
# $(PREFIX)/lib/systemd/system, which systemd also reads for /usr/local; their ExecStart
# names the programs in $(sbindir) and the configuration in $(sysconfdir)/kippu.
bindir      ?= $(PREFIX)/bin
sbindir     ?= $(PREFIX)/sbin
datarootdir ?= $(PREFIX)/share
datadir     ?= $(datarootdir)
mandir      ?= $(datarootdir)/man
sysconfdir  ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
unitdir     ?= $(if $(filter /usr,$(PREFIX)),/lib/systemd/system,$(PREFIX)/lib/systemd/system)
STRIP       ?= strip
INSTALL_STRIP ?= $(if $(STRIP),-s --strip-program=$(STRIP))
INSTALL     ?= install
# Man pages (tools/man/, a section per suffix): a wildcard, so none is needed to install.
# The developer tool's page goes with it (install-dev-tools).
DEV_MANPAGES := $(wildcard tools/man/kippu-pn532-emu.*)
MANPAGES    := $(filter-out $(DEV_MANPAGES),$(wildcard tools/man/*.1 tools/man/*.5 tools/man/*.8))
UNITS       := tools/systemd/kippu-terminal.service tools/systemd/kippu-backend.service
# Sample data and examples (not active where they are): the demo's scenario and load file,
# a libnfc.conf and a udev rule for USB readers.
SAMPLES     := tools/demo/scenario.txt tools/demo/load.txt tools/etc/libnfc.conf \
               tools/etc/60-kippu-nfc.rules

# The example configurations: every key of `kippu-terminal --config-keys` and `kippu-backend
# --config-keys`, commented out with its default, so they cannot drift from the parsers' tables.
$(BUILD)/etc/terminal.conf: $(BUILD)/bin/kippu-terminal tools/etc/conf-example.awk
	@mkdir -p $(dir $@)
	$(BUILD)/bin/kippu-terminal --config-keys | awk -f tools/etc/conf-example.awk > $@.tmp
	mv $@.tmp $@
$(BUILD)/etc/backend.conf: $(BUILD)/bin/kippu-backend tools/etc/conf-example.awk
	@mkdir -p $(dir $@)
	$(BUILD)/bin/kippu-backend --config-keys | awk -v prog=kippu-backend \
	  -f tools/etc/conf-example.awk > $@.tmp
	mv $@.tmp $@

install: $(PROGS) $(BUILD)/etc/terminal.conf $(BUILD)/etc/backend.conf
	$(INSTALL) -d $(DESTDIR)$(bindir) $(DESTDIR)$(sbindir) $(DESTDIR)$(unitdir) \
	  $(DESTDIR)$(sysconfdir)/kippu $(DESTDIR)$(datadir)/kippu
	$(INSTALL) -m 0755 $(INSTALL_STRIP) $(BUILD)/bin/kippuctl $(BUILD)/bin/kippu-loadgen \
	  $(DESTDIR)$(bindir)/
	$(INSTALL) -m 0755 $(INSTALL_STRIP) $(BUILD)/bin/kippu-terminal $(BUILD)/bin/kippu-backend \
	  $(DESTDIR)$(sbindir)/
	@for u in $(UNITS); do echo "$(INSTALL) -m 0644 $$u $(DESTDIR)$(unitdir)/ (paths: $(sbindir), $(sysconfdir))"; \
	  sed -e 's|=/usr/sbin/|=$(sbindir)/|' -e 's| /etc/kippu/| $(sysconfdir)/kippu/|' "$$u" > "$(DESTDIR)$(unitdir)/$${u##*/}" && \
	  chmod 0644 "$(DESTDIR)$(unitdir)/$${u##*/}" || exit 1; done
	$(INSTALL) -m 0644 $(BUILD)/etc/terminal.conf $(BUILD)/etc/backend.conf $(DESTDIR)$(sysconfdir)/kippu/
	$(INSTALL) -m 0644 $(SAMPLES) $(DESTDIR)$(datadir)/kippu/
	@for m in $(MANPAGES); do s=$${m##*.}; \
	  echo "$(INSTALL) -D -m 0644 $$m $(DESTDIR)$(mandir)/man$$s/$${m##*/}"; \
	  $(INSTALL) -D -m 0644 "$$m" "$(DESTDIR)$(mandir)/man$$s/$${m##*/}" || exit 1; done

install-dev-tools: $(BUILD)/bin/kippu-pn532-emu
	$(INSTALL) -d $(DESTDIR)$(bindir)
	$(INSTALL) -m 0755 $(INSTALL_STRIP) $(BUILD)/bin/kippu-pn532-emu $(DESTDIR)$(bindir)/
	@for m in $(DEV_MANPAGES); do s=$${m##*.}; \
	  echo "$(INSTALL) -D -m 0644 $$m $(DESTDIR)$(mandir)/man$$s/$${m##*/}"; \
	  $(INSTALL) -D -m 0644 "$$m" "$(DESTDIR)$(mandir)/man$$s/$${m##*/}" || exit 1; done

# `make deb`: the Debian packages (debian/, README "Installing"). dpkg-buildpackage -us -uc -b
# runs in a copy of the tree under $(BUILD)/deb-src (it writes into the tree and into its
# parent; debian/rules builds in build-deb/ of the copy); the .deb, .changes and .buildinfo
# files are moved to $(BUILD)/deb/ and the copy removed. The make running this passes none
# of its flags or variables on.
DEB_OUT := $(BUILD)/deb
DEB_SRC := $(BUILD)/deb-src
deb: deps
	rm -rf $(DEB_SRC) $(DEB_OUT)
	mkdir -p $(DEB_SRC)/kippu $(DEB_OUT)
	tar -cf - --exclude=./.git --exclude='./build*' \
	  --exclude=./$(patsubst $(CURDIR)/%,%,$(abspath $(BUILD))) . | tar -C $(DEB_SRC)/kippu -xf -
	cd $(DEB_SRC)/kippu && env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u MAKEOVERRIDES \
	  dpkg-buildpackage -us -uc -b
	mv $(DEB_SRC)/*.deb $(DEB_SRC)/*.changes $(DEB_SRC)/*.buildinfo $(DEB_OUT)/
	rm -rf $(DEB_SRC)
	@ls $(DEB_OUT)

clean:
	rm -rf $(BUILD) build build-san build-*/

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
