# kippu — one non-recursive Makefile. User CFLAGS/LDFLAGS are left to the user;
# project flags live in KP_CFLAGS. `make SANITIZE=1 ...` builds with ASan+UBSan in build-san/.
PREFIX    ?= /usr/local
DESTDIR   ?=
CC        ?= cc
SANITIZE  ?= 0
DEMO_DIR  ?=
BENCH_JSON ?=

ifeq ($(SANITIZE),1)
BUILD     ?= build-san
SANFLAGS  := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else
BUILD     ?= build
SANFLAGS  :=
endif

# Debian packages the build, tests and demo need (installed by `make deps`, only when missing).
DEB_PKGS := gcc make libc6-dev pkg-config libnfc-dev libnfc-bin libmbedtls-dev libsqlite3-dev \
            libcmocka-dev libcbor-dev python3 openssl sqlite3 libncurses-dev libjansson-dev tmux \
            faketime tzdata

# Recursive (=) so pkg-config runs only when a recipe needs it, after `deps` has run.
PKG_CFLAGS = $(shell pkg-config --cflags libnfc sqlite3 cmocka libcbor 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs libnfc sqlite3 libcbor 2>/dev/null) -lmbedtls -lmbedx509 -lmbedcrypto -lpthread -lm
CMOCKA_LIBS = $(shell pkg-config --libs cmocka 2>/dev/null)
# The driver console (ncursesw) and the event stream (jansson): kippu-terminal and the
# console's tests only.
CONSOLE_CFLAGS = $(shell pkg-config --cflags ncursesw jansson 2>/dev/null)
CONSOLE_LIBS   = $(shell pkg-config --libs ncursesw jansson 2>/dev/null)

KP_CFLAGS := -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter \
             -Ihal -Icrypto -Ibackend-sync -Iterminal -Itools -MMD -MP $(SANFLAGS)
KP_LDFLAGS := $(SANFLAGS)

# Each top folder builds one static library from its .c files, except its programs' mains.
HAL_SRC    := $(wildcard hal/*.c)
CRYPTO_SRC := $(wildcard crypto/*.c)
SYNC_SRC   := $(filter-out backend-sync/main.c,$(wildcard backend-sync/*.c))
CONSOLE_SRC := terminal/console.c terminal/events.c terminal/driver.c
TERM_SRC   := $(filter-out terminal/main.c $(CONSOLE_SRC),$(wildcard terminal/*.c))
TOOLS_SRC  := $(filter-out tools/kippuctl.c tools/pn532_emu.c,$(wildcard tools/*.c))
TEST_SRC   := $(wildcard tests/test_*.c)
BENCH_SRC  := tests/bench.c
BENCH_SYNC_SRC := tests/bench_sync.c
BENCH_NFC_SRC := tests/bench_libnfc.c
BENCH_JPKI_SRC := tests/bench_jpki.c
BENCH_FARES_SRC := tests/bench_fares.c

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

LIB_HAL    := $(BUILD)/lib/libkphal.a
LIB_CRYPTO := $(BUILD)/lib/libkpcrypto.a
LIB_SYNC   := $(BUILD)/lib/libkpsync.a
LIB_TERM   := $(BUILD)/lib/libkpterm.a
LIB_TOOLS  := $(BUILD)/lib/libkptools.a
LIB_CONSOLE := $(BUILD)/lib/libkpconsole.a
# Link order: dependants first.
LIBS := $(LIB_TOOLS) $(LIB_TERM) $(LIB_SYNC) $(LIB_HAL) $(LIB_CRYPTO)

PROGS := $(BUILD)/bin/kippu-terminal $(BUILD)/bin/kippuctl $(BUILD)/bin/kippu-backend \
         $(BUILD)/bin/kippu-pn532-emu
TESTS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
# Tests that run the real programs from a shell script (tests/run.sh runs them with sh).
SHELL_TESTS := $(wildcard tests/test_*.sh)
BENCH := $(BUILD)/bin/kippu-bench
BENCH_SYNC := $(BUILD)/bin/kippu-bench-sync
BENCH_NFC := $(BUILD)/bin/kippu-bench-libnfc
BENCH_JPKI := $(BUILD)/bin/kippu-bench-jpki
BENCH_FARES := $(BUILD)/bin/kippu-bench-fares

.PHONY: all deps test check test-dates demo bench clean install
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
	$(CC) $(KP_CFLAGS) $(PKG_CFLAGS) $(CFLAGS) -c $< -o $@

define mklib
$(1): $(call obj,$(2))
	@mkdir -p $$(dir $$@)
	rm -f $$@ && ar rcs $$@ $$^
endef
$(eval $(call mklib,$(LIB_HAL),$(HAL_SRC)))
$(eval $(call mklib,$(LIB_CRYPTO),$(CRYPTO_SRC)))
$(eval $(call mklib,$(LIB_SYNC),$(SYNC_SRC)))
$(eval $(call mklib,$(LIB_TERM),$(TERM_SRC)))
$(eval $(call mklib,$(LIB_TOOLS),$(TOOLS_SRC)))
$(eval $(call mklib,$(LIB_CONSOLE),$(CONSOLE_SRC)))
$(call obj,$(CONSOLE_SRC) tests/test_console.c): KP_CFLAGS += $(CONSOLE_CFLAGS)

$(BUILD)/bin/kippu-terminal: $(call obj,terminal/main.c) $(LIB_CONSOLE) $(LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(KP_LDFLAGS) $(LDFLAGS) -o $@ $< $(LIB_CONSOLE) $(LIBS) $(PKG_LIBS) $(CONSOLE_LIBS)

$(BUILD)/bin/kippu-backend: $(call obj,backend-sync/main.c) $(LIB_SYNC) $(LIB_CRYPTO)
	@mkdir -p $(dir $@)
	$(CC) $(KP_LDFLAGS) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(BUILD)/bin/kippuctl: $(call obj,tools/kippuctl.c) $(LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(KP_LDFLAGS) $(LDFLAGS) -o $@ $< $(LIBS) $(PKG_LIBS)

# The PN532 emulator drives the mock HAL's card models through the public HAL API only.
$(BUILD)/bin/kippu-pn532-emu: $(call obj,tools/pn532_emu.c) $(LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(KP_LDFLAGS) $(LDFLAGS) -o $@ $< $(LIBS) $(PKG_LIBS)

$(BENCH): $(call obj,$(BENCH_SRC)) $(LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(KP_LDFLAGS) $(LDFLAGS) -o $@ $< $(LIBS) $(PKG_LIBS)

$(BENCH_SYNC): $(call obj,$(BENCH_SYNC_SRC)) $(LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(KP_LDFLAGS) $(LDFLAGS) -o $@ $< $(LIBS) $(PKG_LIBS)

$(BENCH_NFC): $(call obj,$(BENCH_NFC_SRC)) $(LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(KP_LDFLAGS) $(LDFLAGS) -o $@ $< $(LIBS) $(PKG_LIBS)

$(BENCH_JPKI): $(call obj,$(BENCH_JPKI_SRC)) $(LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(KP_LDFLAGS) $(LDFLAGS) -o $@ $< $(LIBS) $(PKG_LIBS)

$(BENCH_FARES): $(call obj,$(BENCH_FARES_SRC)) $(LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(KP_LDFLAGS) $(LDFLAGS) -o $@ $< $(LIBS) $(PKG_LIBS)

# Unit tests of the lower folders link only what they test (tests/test_hal_*, test_crypto*,
# test_record*), so each folder's tests build while the folders above it change.
TESTS_HAL    := $(filter $(BUILD)/tests/test_hal_%,$(TESTS))
TESTS_CRYPTO := $(filter $(BUILD)/tests/test_crypto $(BUILD)/tests/test_crypto_%,$(TESTS))
TESTS_RECORD := $(filter $(BUILD)/tests/test_record $(BUILD)/tests/test_record_%,$(TESTS))
TESTS_CONSOLE := $(filter $(BUILD)/tests/test_console $(BUILD)/tests/test_console_%,$(TESTS))
TESTS_UPPER  := $(filter-out $(TESTS_HAL) $(TESTS_CRYPTO) $(TESTS_RECORD) $(TESTS_CONSOLE),$(TESTS))

$(TESTS_HAL): $(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(LIB_HAL)
	@mkdir -p $(dir $@)
	$(CC) $(KP_LDFLAGS) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(CMOCKA_LIBS)

$(TESTS_CRYPTO): $(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(LIB_CRYPTO)
	@mkdir -p $(dir $@)
	$(CC) $(KP_LDFLAGS) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(CMOCKA_LIBS)

$(TESTS_RECORD): $(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(LIB_SYNC) $(LIB_CRYPTO)
	@mkdir -p $(dir $@)
	$(CC) $(KP_LDFLAGS) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(CMOCKA_LIBS)

$(TESTS_CONSOLE): $(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(LIB_CONSOLE) $(LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(KP_LDFLAGS) $(LDFLAGS) -o $@ $(filter %.o,$^) $(LIB_CONSOLE) $(LIBS) $(PKG_LIBS) $(CONSOLE_LIBS) $(CMOCKA_LIBS)

$(TESTS_UPPER): $(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(KP_LDFLAGS) $(LDFLAGS) -o $@ $(filter %.o,$^) $(LIBS) $(PKG_LIBS) $(CMOCKA_LIBS)
# Test helpers with a .c of their own, linked into the tests that use them.
$(BUILD)/tests/test_powercut: $(call obj,tests/crashvfs.c)
$(addprefix $(BUILD)/tests/,test_stored test_tap test_pass test_fare_engine test_console): \
  $(call obj,tests/fixtures.c)

# `test` installs what is missing, then builds and runs every test program.
test: deps
	@$(MAKE) --no-print-directory check

check: $(PROGS) $(TESTS)
	@KP_BIN=$(BUILD)/bin KP_TESTS=$(BUILD)/tests sh tests/run.sh $(TESTS) $(SHELL_TESTS)

# The demo and the test programs that read the wall clock or make certificates, under
# faketime at 2027-03-01 09:00 JST, 2030-12-31 23:59:30 UTC and 2036-02-29 12:00 UTC, each in
# another time zone (tests/dates.sh): nothing may depend on today's date.
DATE_TESTS := $(addprefix $(BUILD)/tests/,test_ctl_jpki test_jpki test_hal_jpki test_linkage \
              test_sync test_integration test_libnfc test_bus_distance test_stored test_pass \
              test_crypto_rsa test_crypto_tls test_bundle_fares test_tap) tests/test_console_tmux.sh
test-dates: deps
	@$(MAKE) --no-print-directory $(PROGS) $(filter $(BUILD)/%,$(DATE_TESTS))
	@KP_BIN=$(BUILD)/bin KP_TESTS=$(BUILD)/tests sh tests/dates.sh $(DATE_TESTS)

demo: deps
	@$(MAKE) --no-print-directory $(PROGS)
	@KP_BIN=$(BUILD)/bin DEMO_DIR="$(DEMO_DIR)" sh tools/demo.sh

# kippu-bench: tap latency; kippu-bench-sync: backend ingest against the machine's ES256
# verify rate (works in a fresh folder under $(BUILD)/bench, removed after);
# kippu-bench-libnfc: card presence -> decision through libnfc and kippu-pn532-emu (a small
# store of its own in $(BUILD)/bench-libnfc, removed after); kippu-bench-jpki: a My Number
# card's arrival -> decision on the mock HAL (its own CA, cards and store in
# $(BUILD)/bench-jpki, removed after). With BENCH_JSON=path,
# kippu-bench writes its JSON array there and the others add their figures to the same
# array (--json-append), so one file holds them all.
bench: deps
	@$(MAKE) --no-print-directory $(BENCH) $(BENCH_SYNC) $(BENCH_NFC) $(BENCH_JPKI) $(BENCH_FARES) $(BUILD)/bin/kippu-pn532-emu
	@$(BENCH) --dir $(BUILD)/bench $(if $(BENCH_JSON),--json $(BENCH_JSON))
	@$(BENCH_SYNC) --dir $(BUILD)/bench $(if $(BENCH_JSON),--json-append $(BENCH_JSON))
	@$(BENCH_NFC) --dir $(BUILD)/bench-libnfc $(if $(BENCH_JSON),--json-append $(BENCH_JSON))
	@$(BENCH_JPKI) --dir $(BUILD)/bench-jpki $(if $(BENCH_JSON),--json-append $(BENCH_JSON))
	@$(BENCH_FARES) --dir $(BUILD)/bench-fares $(if $(BENCH_JSON),--json-append $(BENCH_JSON))

install: $(PROGS)
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(PROGS) $(DESTDIR)$(PREFIX)/bin/

clean:
	rm -rf build build-san build-*/

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
