# llorch build. `make` builds everything into build/; `make test` runs the suite;
# `make run` sets up and runs the default job; `make deps` installs what is missing.

CC ?= cc
ifeq ($(origin CC),default)
CC := cc
endif
BUILD ?= build
SAN ?=
OPT ?= -O2

WARN := -Wall -Wextra -Werror -Wno-unused-parameter -Wshadow -Wvla
CFLAGS_ALL := -std=c11 -D_GNU_SOURCE $(OPT) -g -pthread -fPIC $(WARN) \
              -Icommon -Iproto -Iclient $(EXTRA_CFLAGS)
LDLIBS_ALL := -ljansson -lmsgpackc -lzmq -lsodium -lm -lpthread

ifeq ($(SAN),1)
CFLAGS_ALL += -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
LDFLAGS_ALL += -fsanitize=address,undefined
endif

# Per-file instruction sets: kernels_<isa>.c is compiled for that ISA only and
# chosen at run time from the CPU's features. The kernels' functions and loops start on
# 64-byte boundaries: where the hot loop of the matrix x vector product falls against
# them moved decode speed by 10-20% on Zen3 between binaries linking the same object
# (llorch-worker ran 15% slower than llorch before this).
ISA_avx2 := -mavx2 -mfma -mf16c -falign-functions=64 -falign-loops=64
ISA_avx512 := -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mavx2 -mfma -mf16c \
              -falign-functions=64 -falign-loops=64

CORE_SRC := $(wildcard common/*.c) $(wildcard proto/*.c)
CORE_OBJ := $(CORE_SRC:%.c=$(BUILD)/obj/%.o)
CORE_LIB := $(BUILD)/lib/libllorch-core.a

CLI_SRC := $(wildcard client/cli/*.c)
CLI_OBJ := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)

TEST_SRC := $(wildcard tests/unit/test_*.c)
TEST_BIN := $(TEST_SRC:tests/unit/%.c=$(BUILD)/tests/%)

BINS := $(BUILD)/bin/llorch

# Process binaries: every loader/*.c into llorch-loader, every worker/*.c into llorch-worker.
LOADER_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard loader/*.c))
WORKER_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard worker/*.c))
BINS += $(BUILD)/bin/llorch-loader $(if $(WORKER_OBJ),$(BUILD)/bin/llorch-worker)

# llorch-router from router/*.c. libllorch (client/lib/*.c plus the message layer it
# uses) as a shared and a static library with a pkg-config file; the CLI links the
# client objects too. tests/pipeline/*.c are helper programs of the pipeline tests.
ROUTER_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard router/*.c))
CLIENT_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard client/lib/*.c))
CLIENT_DEP_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard proto/*.c) common/error.c common/log.c)
CLIENT_LIBS := -lmsgpackc -lzmq -lsodium -lpthread
PIPE_TEST_BIN := $(patsubst tests/pipeline/%.c,$(BUILD)/tests/pipeline/%,$(wildcard tests/pipeline/*.c))
CLI_OBJ += $(CLIENT_OBJ)
BINS += $(BUILD)/bin/llorch-router $(BUILD)/lib/libllorch.so $(BUILD)/lib/libllorch.a \
        $(BUILD)/lib/pkgconfig/llorch.pc $(PIPE_TEST_BIN)
PREFIX ?= /usr/local

.PHONY: all test unit unit-asan reference fuzz run deps clean bench check-gcc-clang install
all: $(BINS) $(TEST_BIN)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(ISA_$(patsubst kernels_%,%,$(basename $(notdir $<)))) -MMD -MP -c $< -o $@

$(CORE_LIB): $(CORE_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

$(BUILD)/bin/llorch: $(CLI_OBJ) $(CORE_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -pthread -o $@ $(CLI_OBJ) $(CORE_LIB) $(LDLIBS_ALL)

$(BUILD)/bin/llorch-loader: $(LOADER_OBJ) $(CORE_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -pthread -o $@ $(LOADER_OBJ) $(CORE_LIB) $(LDLIBS_ALL) -lrt

$(BUILD)/bin/llorch-worker: $(WORKER_OBJ) $(CORE_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -pthread -o $@ $(WORKER_OBJ) $(CORE_LIB) $(LDLIBS_ALL) -lrt

# The router's HTTP API (router/http*.c) reaches the router through libllorch.
$(BUILD)/bin/llorch-router: $(ROUTER_OBJ) $(CLIENT_OBJ) $(CORE_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -pthread -o $@ $(ROUTER_OBJ) $(CLIENT_OBJ) $(CORE_LIB) $(LDLIBS_ALL) -lmicrohttpd

$(BUILD)/lib/libllorch.so.1: $(CLIENT_OBJ) $(CLIENT_DEP_OBJ) client/lib/llorch.map
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -shared -Wl,-soname,libllorch.so.1 -Wl,--version-script=client/lib/llorch.map \
	    -Wl,--no-undefined -o $@ $(CLIENT_OBJ) $(CLIENT_DEP_OBJ) $(CLIENT_LIBS)

$(BUILD)/lib/libllorch.so: $(BUILD)/lib/libllorch.so.1
	ln -sf libllorch.so.1 $@

$(BUILD)/lib/libllorch.a: $(CLIENT_OBJ) $(CLIENT_DEP_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

$(BUILD)/lib/pkgconfig/llorch.pc: client/lib/llorch.pc.in
	@mkdir -p $(dir $@)
	sed -e 's|@PREFIX@|$(abspath $(BUILD))|; s|@INCLUDEDIR@|$(abspath client/lib)|' $< > $@

$(BUILD)/tests/pipeline/%: tests/pipeline/%.c $(CLIENT_OBJ) $(CORE_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -MMD -MP -o $@ $< $(CLIENT_OBJ) $(CORE_LIB) $(LDFLAGS_ALL) $(LDLIBS_ALL)

# `make install [PREFIX=/usr/local] [DESTDIR=]`: the binaries, libllorch, llorch.h, llorch.pc.
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include
	install -m 755 $(filter $(BUILD)/bin/%,$(BINS)) $(DESTDIR)$(PREFIX)/bin/
	install -m 755 $(BUILD)/lib/libllorch.so.1 $(DESTDIR)$(PREFIX)/lib/
	ln -sf libllorch.so.1 $(DESTDIR)$(PREFIX)/lib/libllorch.so
	install -m 644 $(BUILD)/lib/libllorch.a $(DESTDIR)$(PREFIX)/lib/
	install -m 644 client/lib/llorch.h $(DESTDIR)$(PREFIX)/include/
	sed -e 's|@PREFIX@|$(PREFIX)|; s|@INCLUDEDIR@|$${prefix}/include|' client/lib/llorch.pc.in \
	    > $(DESTDIR)$(PREFIX)/lib/pkgconfig/llorch.pc

# Unit tests of the HTTP API link its objects (all router/http*.c) and libllorch.
HTTP_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard router/http*.c))
$(BUILD)/tests/test_http%: tests/unit/test_http%.c $(HTTP_OBJ) $(CLIENT_OBJ) $(CORE_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Itests/unit -Irouter -MMD -MP -o $@ $< $(HTTP_OBJ) $(CLIENT_OBJ) $(CORE_LIB) \
	    $(LDFLAGS_ALL) -lcmocka $(LDLIBS_ALL) -lmicrohttpd

$(BUILD)/tests/%: tests/unit/%.c $(CORE_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Itests/unit -MMD -MP -o $@ $< $(CORE_LIB) $(LDFLAGS_ALL) -lcmocka $(LDLIBS_ALL)

-include $(shell find $(BUILD)/obj $(BUILD)/tests -name '*.d' 2>/dev/null)

# ---- set-up -------------------------------------------------------------------
deps:
	@scripts/deps.sh

# ---- tests --------------------------------------------------------------------
# The whole suite: unit tests, the same under ASan+UBSan, the llama.cpp reference
# comparisons and a bounded fuzz run. Prints one closing line "N passed, N failed".
test: deps-check
	@tests/run_all.sh

deps-check:
	@scripts/deps.sh --check

unit: all
	@tests/run_unit.sh $(BUILD)/tests

unit-asan:
	@$(MAKE) --no-print-directory BUILD=build/asan SAN=1 OPT=-O1 all
	@tests/run_unit.sh build/asan/tests

fuzz:
	@tests/fuzz/run.sh

reference: all
	@tests/reference/run.sh

# Both compilers, warnings as errors.
check-gcc-clang:
	@$(MAKE) --no-print-directory BUILD=build/gcc CC=gcc all
	@$(MAKE) --no-print-directory BUILD=build/clang CC=clang all

# ---- the default job ----------------------------------------------------------
run:
	@scripts/run.sh

bench: all
	@scripts/bench.sh

clean:
	rm -rf build
