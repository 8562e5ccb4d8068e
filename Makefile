# moonring - see README.md. `make run` serves echo, `make test` tests.
VERSION    := 0.1.0
PREFIX     ?= /usr/local
ifeq ($(origin CC),default)
CC         := gcc
endif
PKGS       := liburing openssl $(shell pkg-config --exists luajit 2>/dev/null && echo luajit)
CFLAGS     ?= -O2 -g
CFLAGS     += -std=gnu11 -Wall -Wextra -Werror -D_GNU_SOURCE \
              -DMR_VERSION='"$(VERSION)"' \
              -DMR_LUADIR='"$(PREFIX)/share/moonring/lua"' \
              $(shell pkg-config --cflags liburing 2>/dev/null)
LDLIBS     += $(shell pkg-config --libs $(PKGS) 2>/dev/null)
LUA_CFLAGS := $(shell pkg-config --cflags luajit 2>/dev/null)

# make SANITIZE=1: AddressSanitizer + UndefinedBehaviorSanitizer build
ifeq ($(SANITIZE),1)
CFLAGS     += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS    += -fsanitize=address,undefined
BUILD      := build/san
else
BUILD      := build/rel
endif

# Three layers, each calling only the one below (README, "How it works").
# Each sees only its own headers and those below: the core is built
# without Lua's, the server without Lua's too (it knows the binding by
# lua_host.h alone), so a call upward does not compile.
CORE_SRC   := $(wildcard src/core/*.c)
LUA_SRC    := $(wildcard src/lua/*.c)
SERVER_SRC := $(filter-out src/server/main.c,$(wildcard src/server/*.c))
CORE_OBJ   := $(CORE_SRC:src/%.c=$(BUILD)/%.o)
ALL_OBJ    := $(CORE_OBJ) $(LUA_SRC:src/%.c=$(BUILD)/%.o) $(SERVER_SRC:src/%.c=$(BUILD)/%.o)
INC_core   := -Isrc/core
INC_lua    := -Isrc/lua -Isrc/core $(LUA_CFLAGS)
INC_server := -Isrc/server -Isrc/lua -Isrc/core
BIN        := moonring$(if $(filter 1,$(SANITIZE)),-san)

.PHONY: all deps deps-test run test check unit integration layers deps-plan fuzz-replay install uninstall fuzz soak testssl bench instructions clean
all: $(BIN)

deps:
	@scripts/deps.sh build
deps-test:
	@scripts/deps.sh test

$(BIN): $(ALL_OBJ) $(BUILD)/server/main.o
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# $(BUILD)/<layer>/<file>.o, with that layer's include path
.SECONDEXPANSION:
$(BUILD)/%.o: src/%.c | $$(@D)
	$(CC) $(CFLAGS) $(INC_$(firstword $(subst /, ,$*))) -MMD -MP -c -o $@ $<

$(BUILD)/lua/embed.o: lua/echo.lua

$(BUILD)/core $(BUILD)/lua $(BUILD)/server:
	@mkdir -p $@

$(BUILD)/libmrcore.a: $(CORE_OBJ)
	ar rcs $@ $^

$(BUILD)/libmoonring.a: $(ALL_OBJ)
	ar rcs $@ $^

# Tests: one cmocka binary per unit (tests/unit/test_<module>.c) and per
# integration suite (tests/integration/test_*.c, which drive the real binary).
# The core's own tests see the core alone, and link with it alone.
UNIT_TESTS  := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(wildcard tests/unit/test_*.c))
INTEG_TESTS := $(patsubst tests/integration/%.c,$(BUILD)/tests/%,$(wildcard tests/integration/test_*.c))
CORE_TESTS  := $(addprefix $(BUILD)/tests/test_,bufring conn core fsreq resolv sendq shdict timer ud core_udp)
TEST_CFLAGS := $(CFLAGS) -Itests/integration
TEST_LIBS   := -lcmocka -lpthread

$(CORE_TESTS): $(BUILD)/tests/test_%: tests/unit/test_%.c $(BUILD)/libmrcore.a | $(BUILD)/tests
	$(CC) $(TEST_CFLAGS) $(INC_core) $(LDFLAGS) -MMD -MP -o $@ $< $(BUILD)/libmrcore.a \
	  $(shell pkg-config --libs liburing 2>/dev/null) $(TEST_LIBS)

$(BUILD)/tests/test_%: tests/unit/test_%.c $(BUILD)/libmoonring.a | $(BUILD)/tests
	$(CC) $(TEST_CFLAGS) $(INC_server) $(LDFLAGS) -MMD -MP -o $@ $< $(BUILD)/libmoonring.a \
	  $(LDLIBS) $(TEST_LIBS)

$(BUILD)/tests/test_%: tests/integration/test_%.c $(BUILD)/tests/harness.o | $(BUILD)/tests
	$(CC) $(TEST_CFLAGS) $(LDFLAGS) -MMD -MP -o $@ $< $(BUILD)/tests/harness.o $(LDLIBS) $(TEST_LIBS)

$(BUILD)/tests/harness.o: tests/integration/harness.c | $(BUILD)/tests
	$(CC) $(TEST_CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/tests:
	@mkdir -p $@

unit: $(UNIT_TESTS)
	@set -e; for t in $(UNIT_TESTS); do echo "== $$t"; $$t; done

# ASan keeps freed memory in quarantine; a small one keeps the memory
# bounds that tests check meaningful. With 8 MiB, test_high_water's
# server grew by 14-17.7 MiB against its bound of 16 (and failed about
# one run in three); with 2 MiB, by 6.8-8.7.
integration: $(BIN) $(INTEG_TESTS)
	@set -e; for t in $(INTEG_TESTS); do echo "== $$t"; \
	  ASAN_OPTIONS=quarantine_size_mb=2 MOONRING_BIN=./$(BIN) $$t; done

# No file includes a header of a layer above its own, even by a path
# the include flags would not stop.
layers:
	@! grep -nE '#include *[<"](\.\./)*(lua|server)/|#include *<(lua|lauxlib|lualib|luajit)\.h>' src/core/* \
	  || { echo "layers: src/core/ must not include the binding, the server or Lua"; exit 1; }
	@! grep -nE '#include *[<"](\.\./)*server/' src/lua/* \
	  || { echo "layers: src/lua/ must not include the server"; exit 1; }

# scripts/deps.sh's package choices and its refusal to remove a package,
# against fake dpkg-query and apt-get: changes nothing, needs no root.
deps-plan:
	@tests/deps-plan.sh

# Inputs that once crashed a fuzzer (tests/fuzz/corpus/<harness>/), run
# through the harness's code by a plain driver, under ASan and UBSan.
FUZZ_HARNESSES := $(patsubst tests/fuzz/%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_SRC_fuzz_sendq := src/core/sendq.c
FUZZ_SRC_fuzz_cli   := src/server/cli.c src/core/log.c
FUZZ_SRC_fuzz_watch := src/server/watch.c
FUZZ_SRC_fuzz_resolv := src/core/dns.c
REPLAYERS := $(FUZZ_HARNESSES:%=$(BUILD)/replay/%)
REPLAY_FLAGS := -g -O1 -std=gnu11 -Wall -Wextra -Werror -D_GNU_SOURCE -Isrc/core -Isrc/server \
                -fsanitize=address,undefined -fno-sanitize-recover=undefined

$(BUILD)/replay/%: tests/fuzz/%.c tests/fuzz/replay.c $$(FUZZ_SRC_%)
	@mkdir -p $(@D)
	$(CC) $(REPLAY_FLAGS) -o $@ $^

fuzz-replay: $(REPLAYERS)
	@set -e; for h in $(FUZZ_HARNESSES); do [ -d tests/fuzz/corpus/$$h ] || continue; \
	  echo "== $$h: $$(ls tests/fuzz/corpus/$$h | wc -l) regression input(s)"; \
	  $(BUILD)/replay/$$h tests/fuzz/corpus/$$h; done

check: layers deps-plan unit fuzz-replay integration

# make test: install what is missing, build, run every test.
# make test SANITIZE=1: the same under ASan and UBSan.
test: deps-test
	@$(MAKE) --no-print-directory check

# the load generator behind scripts/syscalls.sh and make bench, and the
# epoll echo server moonring is measured against (and for datagrams,
# udpgen and the recvmmsg/sendmmsg echo)
# loadgen's --tls
build/loadgen: BENCH_LIBS := -lssl -lcrypto
build/loadgen build/epoll_echo build/udp_echo build/udpgen: build/%: tests/bench/%.c
	@mkdir -p build
	$(CC) -O2 -Wall -Wextra -Werror -o $@ $< $(BENCH_LIBS)

run: deps
	@$(MAKE) --no-print-directory all
	./moonring

# make fuzz [FUZZ_SECONDS=60]: libFuzzer (clang) on the C code that parses
# or queues bytes, each harness for FUZZ_SECONDS, under ASan and UBSan,
# starting from the regression inputs.
FUZZERS      := $(patsubst tests/fuzz/%.c,build/fuzz/%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_SECONDS ?= 60
FUZZ_FLAGS   := -g -O1 -std=gnu11 -D_GNU_SOURCE -Isrc/core -Isrc/server $(shell pkg-config --cflags liburing 2>/dev/null) \
                -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined

build/fuzz/%: tests/fuzz/%.c $$(FUZZ_SRC_%)
	@mkdir -p build/fuzz
	clang $(FUZZ_FLAGS) -o $@ $^

fuzz:
	@scripts/deps.sh fuzz
	@$(MAKE) --no-print-directory $(FUZZERS)
	@set -e; for f in $(FUZZERS); do echo "== $$f ($(FUZZ_SECONDS) s)"; \
	  h=$$(basename $$f); corpus=build/fuzz/corpus-$$h; mkdir -p $$corpus; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -artifact_prefix=build/fuzz/$$h- \
	    $$corpus $$(ls -d tests/fuzz/corpus/$$h 2>/dev/null) > build/fuzz/last.log 2>&1 \
	    || { tail -40 build/fuzz/last.log; \
	         echo "a crash is in build/fuzz/; once fixed, keep it in tests/fuzz/corpus/$$h/"; exit 1; }; \
	  grep -E "^stat::number_of_executed_units|^Done" build/fuzz/last.log; done

# make bench: moonring side by side with the epoll baseline, tarantool,
# nginx and redis-server; prints the table and writes it to BENCHMARKS.md.
bench: deps
	@scripts/bench.sh

# make instructions: user-space instructions per request of the echo,
# plain and pipelined, counted by callgrind (repeatable to about 0.5%).
instructions: deps
	@scripts/deps.sh only valgrind
	@$(MAKE) --no-print-directory all build/loadgen
	@scripts/instructions.sh

# make soak [SOAK_SECONDS=180] [SOAK_HOSTILE=0]: 10,000 connections echoing
# and churning, with 200 non-reading and 200 slow-body clients beside them
# unless SOAK_HOSTILE=0; RSS must not grow, nor pass the hostile clients'
# bound, and no request may fail. Not part of make test.
soak: deps
	@scripts/soak.sh

# make testssl: install testssl.sh (Debian's package) and run its whole
# default scan against examples/http.lua on a tls:// listener; it must
# rate nothing HIGH or CRITICAL. make test runs a quicker scan when
# testssl.sh is installed, and skips it when not. About three minutes.
testssl: deps-test
	@scripts/deps.sh only testssl.sh
	@$(MAKE) --no-print-directory $(BIN) $(BUILD)/tests/test_testssl
	@MOONRING_TESTSSL=full MOONRING_BIN=./$(BIN) $(BUILD)/tests/test_testssl

# make install [PREFIX=/usr/local] [DESTDIR=...]: the binary, the Lua
# library it requires from, the man page and the README.
install: moonring
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/moonring/lua/moonring/http \
	  $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/doc/moonring/examples
	install -m 755 moonring $(DESTDIR)$(PREFIX)/bin/moonring
	install -m 644 lua/*.lua $(DESTDIR)$(PREFIX)/share/moonring/lua/
	install -m 644 lua/moonring/*.lua $(DESTDIR)$(PREFIX)/share/moonring/lua/moonring/
	install -m 644 lua/moonring/http/*.lua $(DESTDIR)$(PREFIX)/share/moonring/lua/moonring/http/
	install -m 644 moonring.1 $(DESTDIR)$(PREFIX)/share/man/man1/moonring.1
	install -m 644 README.md scripts/moonring.service $(DESTDIR)$(PREFIX)/share/doc/moonring/
	install -m 644 examples/*.lua $(DESTDIR)$(PREFIX)/share/doc/moonring/examples/

uninstall:
	rm -rf $(DESTDIR)$(PREFIX)/bin/moonring $(DESTDIR)$(PREFIX)/share/moonring \
	  $(DESTDIR)$(PREFIX)/share/man/man1/moonring.1 $(DESTDIR)$(PREFIX)/share/doc/moonring

clean:
	rm -rf build moonring moonring-san

-include $(wildcard $(BUILD)/*/*.d)
