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
              accept.c worker.c lua_host.c lua_conn.c lua_mod.c embed.c
CORE_OBJ   := $(CORE_SRC:%.c=$(BUILD)/%.o)
BIN        := moonring$(if $(filter 1,$(SANITIZE)),-san)

.PHONY: all deps deps-test run test unit integration clean
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

run: deps
	@$(MAKE) --no-print-directory all
	./moonring

clean:
	rm -rf build moonring moonring-san

-include $(wildcard $(BUILD)/*.d)
