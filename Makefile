# moonring - see README.md. `make run` serves echo, `make test` tests.
VERSION    := 0.1.0
PREFIX     ?= /usr/local
ifeq ($(origin CC),default)
CC         := gcc
endif
PKGS       := liburing $(shell pkg-config --exists luajit 2>/dev/null && echo luajit)
CFLAGS     ?= -O2 -g
CFLAGS     += -std=gnu11 -Wall -Wextra -Werror -D_GNU_SOURCE \
              -DMR_VERSION='"$(VERSION)"' \
              -DMR_LUADIR='"$(PREFIX)/share/moonring/lua"' \
              $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS     += $(shell pkg-config --libs $(PKGS) 2>/dev/null)

# make SANITIZE=1: AddressSanitizer + UndefinedBehaviorSanitizer build
ifeq ($(SANITIZE),1)
CFLAGS     += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS    += -fsanitize=address,undefined
BUILD      := build/san
else
BUILD      := build/rel
endif

CORE_SRC   := log.c cli.c bufring.c sendq.c conn.c loop.c net.c conn_io.c \
              accept.c worker.c reload.c watch.c lua_host.c lua_gc.c lua_conn.c lua_mod.c \
              lua_reload.c timer.c master.c embed.c
CORE_OBJ   := $(CORE_SRC:%.c=$(BUILD)/%.o)
BIN        := moonring$(if $(filter 1,$(SANITIZE)),-san)

.PHONY: all deps deps-test run test check unit integration install uninstall fuzz soak bench clean
all: $(BIN)

deps:
	@scripts/deps.sh build
deps-test:
	@scripts/deps.sh test

$(BIN): $(CORE_OBJ) $(BUILD)/main.o
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/%.o: src/%.c | $(BUILD)
	$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/embed.o: lua/echo.lua

$(BUILD):
	@mkdir -p $@

$(BUILD)/libmoonring.a: $(CORE_OBJ)
	ar rcs $@ $^

# Tests: one cmocka binary per unit (tests/unit/test_<module>.c) and per
# integration suite (tests/integration/test_*.c, which drive the real binary).
UNIT_TESTS  := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(wildcard tests/unit/test_*.c))
INTEG_TESTS := $(patsubst tests/integration/%.c,$(BUILD)/tests/%,$(wildcard tests/integration/test_*.c))
TEST_CFLAGS := $(CFLAGS) -Isrc -Itests/integration
TEST_LIBS   := $(LDLIBS) -lcmocka -lpthread

$(BUILD)/tests/test_%: tests/unit/test_%.c $(BUILD)/libmoonring.a | $(BUILD)/tests
	$(CC) $(TEST_CFLAGS) $(LDFLAGS) -MMD -MP -o $@ $< $(BUILD)/libmoonring.a $(TEST_LIBS)

$(BUILD)/tests/test_%: tests/integration/test_%.c $(BUILD)/tests/harness.o | $(BUILD)/tests
	$(CC) $(TEST_CFLAGS) $(LDFLAGS) -MMD -MP -o $@ $< $(BUILD)/tests/harness.o $(TEST_LIBS)

$(BUILD)/tests/harness.o: tests/integration/harness.c | $(BUILD)/tests
	$(CC) $(TEST_CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/tests:
	@mkdir -p $@

unit: $(UNIT_TESTS)
	@set -e; for t in $(UNIT_TESTS); do echo "== $$t"; $$t; done

# ASan keeps freed memory in quarantine; a small one keeps the memory
# bounds that tests check meaningful.
integration: $(BIN) $(INTEG_TESTS)
	@set -e; for t in $(INTEG_TESTS); do echo "== $$t"; \
	  ASAN_OPTIONS=quarantine_size_mb=8 MOONRING_BIN=./$(BIN) $$t; done

check: unit integration

# make test: install what is missing, build, run every test.
# make test SANITIZE=1: the same under ASan and UBSan.
test: deps-test
	@$(MAKE) --no-print-directory check

# the load generator behind scripts/syscalls.sh and make bench, and the
# epoll echo server moonring is measured against
build/loadgen build/epoll_echo: build/%: tests/bench/%.c
	@mkdir -p build
	$(CC) -O2 -Wall -Wextra -Werror -o $@ $<

run: deps
	@$(MAKE) --no-print-directory all
	./moonring

# make fuzz [FUZZ_SECONDS=60]: libFuzzer (clang) on the C code that parses
# or queues bytes, each harness for FUZZ_SECONDS, under ASan and UBSan.
FUZZERS      := $(patsubst tests/fuzz/%.c,build/fuzz/%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_SECONDS ?= 60
FUZZ_FLAGS   := -g -O1 -std=gnu11 -D_GNU_SOURCE -Isrc $(shell pkg-config --cflags liburing 2>/dev/null) \
                -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined

build/fuzz/fuzz_sendq: src/sendq.c
build/fuzz/fuzz_cli: src/cli.c src/log.c
build/fuzz/fuzz_watch: src/watch.c
build/fuzz/%: tests/fuzz/%.c
	@mkdir -p build/fuzz
	clang $(FUZZ_FLAGS) -o $@ $^

fuzz:
	@scripts/deps.sh fuzz
	@$(MAKE) --no-print-directory $(FUZZERS)
	@set -e; for f in $(FUZZERS); do echo "== $$f ($(FUZZ_SECONDS) s)"; \
	  corpus=build/fuzz/corpus-$$(basename $$f); mkdir -p $$corpus; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 $$corpus > build/fuzz/last.log 2>&1 \
	    || { tail -40 build/fuzz/last.log; exit 1; }; \
	  grep -E "^stat::number_of_executed_units|^Done" build/fuzz/last.log; done

# make bench: moonring side by side with the epoll baseline, tarantool,
# nginx and redis-server; prints the table and writes it to BENCHMARKS.md.
bench: deps
	@scripts/bench.sh

# make soak [SOAK_SECONDS=180]: 10,000 connections echoing and churning;
# RSS must not grow and no request may fail. Not part of make test.
soak: deps
	@scripts/soak.sh

# make install [PREFIX=/usr/local] [DESTDIR=...]: the binary, the Lua
# library it requires from, the man page and the README.
install: moonring
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/moonring/lua/moonring \
	  $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/doc/moonring/examples
	install -m 755 moonring $(DESTDIR)$(PREFIX)/bin/moonring
	install -m 644 lua/*.lua $(DESTDIR)$(PREFIX)/share/moonring/lua/
	install -m 644 lua/moonring/*.lua $(DESTDIR)$(PREFIX)/share/moonring/lua/moonring/
	install -m 644 moonring.1 $(DESTDIR)$(PREFIX)/share/man/man1/moonring.1
	install -m 644 README.md scripts/moonring.service $(DESTDIR)$(PREFIX)/share/doc/moonring/
	install -m 644 examples/*.lua $(DESTDIR)$(PREFIX)/share/doc/moonring/examples/

uninstall:
	rm -rf $(DESTDIR)$(PREFIX)/bin/moonring $(DESTDIR)$(PREFIX)/share/moonring \
	  $(DESTDIR)$(PREFIX)/share/man/man1/moonring.1 $(DESTDIR)$(PREFIX)/share/doc/moonring

clean:
	rm -rf build moonring moonring-san

-include $(wildcard $(BUILD)/*.d $(BUILD)/tests/*.d)
