# pushworker: build, test, run. One plain Makefile; see README.md.
#   make            build/worker
#   make test       unit tests, then integration tests against a throwaway PostgreSQL
#   make run        the worker against a throwaway PostgreSQL (or $DATABASE_URL)
#   make SANITIZE=1 ...   the same under ASan+UBSan

CC      ?= cc
PKGS    := libh2o-evloop json-c libpq libcrypto libssl libcurl
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo unknown)

# The libraries' flags are asked of pkg-config when a compile line first needs them, not when
# this file is read: `make run` and `make test` install the packages (scripts/setup) before that.
PKG_CFLAGS = $(eval PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS)))$(PKG_CFLAGS)
PKG_LIBS   = $(eval PKG_LIBS := $(shell pkg-config --libs $(PKGS)))$(PKG_LIBS)

CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -DH2O_USE_EPOLL=1 -Wall -Wextra -Werror -I. \
           -DPW_VERSION='"$(VERSION)"' $(PKG_CFLAGS)
LDLIBS  += $(PKG_LIBS) -lpthread

ifeq ($(SANITIZE),1)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
B       := build/san
# h2o's per-thread caches are never freed by h2o itself; everything else must be.
export LSAN_OPTIONS := suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0
else
B       := build
endif

PROTO_SRC  := $(wildcard proto/*.c)
WORKER_SRC := $(wildcard worker/*.c)
MIGRATIONS := $(sort $(wildcard migrations/*.sql))
PROTO_OBJ  := $(PROTO_SRC:%.c=$(B)/obj/%.o)
WORKER_OBJ := $(WORKER_SRC:%.c=$(B)/obj/%.o) $(B)/obj/migrations_sql.o

UNIT_PROTO := $(wildcard tests/unit/proto/*.c)
UNIT_WORKER:= $(wildcard tests/unit/worker/*.c)
UNIT_BIN   := $(UNIT_PROTO:tests/unit/%.c=$(B)/tests/unit/%) $(UNIT_WORKER:tests/unit/%.c=$(B)/tests/unit/%)
WORKER_LIB := $(filter-out $(B)/obj/worker/main.o,$(WORKER_OBJ))
INTEG_LIB  := $(filter-out %_test.c,$(wildcard tests/integration/*.c))
INTEG_SRC  := $(wildcard tests/integration/*_test.c)
INTEG_BIN  := $(INTEG_SRC:tests/integration/%.c=$(B)/tests/integration/%)

.PHONY: FORCE all setup build-tests test test-unit test-integration test-faults test-valgrind run clean format lint bench bench-memory bench-instructions bench-analytics fuzz
all: $(B)/worker

# `make run` and `make test` install what is missing (scripts/setup: a no-op when all is there)
# BEFORE the first compile: on a fresh Debian 12 the first #include would fail otherwise. The
# build runs in a sub-make so that nothing is compiled until setup has finished, even with -j.
setup:
	scripts/setup

build-tests: all $(UNIT_BIN) $(INTEG_BIN)

$(B)/worker: $(WORKER_OBJ) $(B)/libproto.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/libproto.a: $(PROTO_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(B)/obj/%.o: %.c $(wildcard proto/*.h worker/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

# The objects that print PW_VERSION are compiled again when `git describe` changes (a commit, or
# the tree becoming dirty or clean), so --version and /metrics never name an older commit.
$(B)/gen/version.txt: FORCE
	@mkdir -p $(dir $@)
	@echo '$(VERSION)' | cmp -s - $@ || echo '$(VERSION)' > $@
$(B)/obj/worker/main.o $(B)/obj/worker/jwks.o $(B)/obj/worker/metrics.o: $(B)/gen/version.txt
FORCE:

# The SQL of migrations/ is compiled into the binary: a container needs nothing but build/worker.
# The list of files is a prerequisite too, rewritten when it changes: a file that goes away (an
# older branch checked out) is not newer than the table, and would stay in the binary.
$(B)/gen/migrations.txt: FORCE
	@mkdir -p $(dir $@)
	@echo '$(MIGRATIONS)' | cmp -s - $@ || echo '$(MIGRATIONS)' > $@

$(B)/gen/migrations_sql.c: $(MIGRATIONS) $(B)/gen/migrations.txt scripts/embed-sql
	@mkdir -p $(dir $@)
	scripts/embed-sql $(MIGRATIONS) > $@.tmp && mv $@.tmp $@

$(B)/obj/migrations_sql.o: $(B)/gen/migrations_sql.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

# Unit tests mirror the tree: tests/unit/proto/X.c tests proto/X.c (and links only proto/).
$(B)/tests/unit/proto/%: tests/unit/proto/%.c $(B)/libproto.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(B)/libproto.a $(LDLIBS) -lcmocka

$(B)/tests/unit/worker/%: tests/unit/worker/%.c $(WORKER_LIB) $(B)/libproto.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(WORKER_LIB) $(B)/libproto.a $(LDLIBS) -lcmocka

$(B)/tests/integration/%: tests/integration/%.c $(INTEG_LIB) $(wildcard tests/integration/*.h) $(B)/libproto.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(INTEG_LIB) $(B)/libproto.a $(LDLIBS) -lcmocka

# The executor's test includes worker/db.c (as h2o's unit tests include the file under test) and
# links only what db.c calls.
DB_EXEC_OBJ := $(addprefix $(B)/obj/worker/,util.o log.o metrics.o)
$(B)/tests/integration/db_exec_test: tests/integration/db_exec_test.c worker/db.c $(DB_EXEC_OBJ) $(INTEG_LIB) \
		$(wildcard tests/integration/*.h proto/*.h worker/*.h) $(B)/libproto.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(DB_EXEC_OBJ) $(INTEG_LIB) $(B)/libproto.a $(LDLIBS) -lcmocka

# Micro-benchmarks run by make bench: tests/bench/X.c -> $(B)/bench/X.
$(B)/bench/%: tests/bench/%.c $(WORKER_LIB) $(B)/libproto.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(WORKER_LIB) $(B)/libproto.a $(LDLIBS)

test: setup
	$(MAKE) build-tests
	B=$(B) tests/run

test-unit: $(UNIT_BIN)
	B=$(B) tests/run --unit-only

run: setup
	$(MAKE) all
	B=$(B) scripts/run-local

bench: all $(B)/bench/verify_bench
	$(B)/bench/verify_bench tests/fixtures/jwt
	B=$(B) scripts/bench
	B=$(B) scripts/bench-memory

# The worker's peak memory under eight concurrent 1 MiB crafted pushes and one of 15 MB (PASS/MISS per target).
bench-memory: all
	B=$(B) scripts/bench-memory

# The worker's instructions per push under callgrind (OTHER=path/to/worker: a second build beside it).
bench-instructions: all
	B=$(B) scripts/bench-instructions

# Every analytics view and function over a 30-day window of 10 million generated messages, before and
# after migrations 0007-0010 (PASS/MISS against 1 s), then what their indexes and roll-ups cost the writes.
# ANALYTICS_MESSAGES shrinks it; ANALYTICS_KEEP=1 / ANALYTICS_DATA=DIR keep and reuse the data.
bench-analytics: all
	B=$(B) scripts/bench-analytics
	B=$(B) scripts/bench-analytics-write

# Coverage-guided fuzzing of every proto parser (clang, libFuzzer, ASan+UBSan): FUZZ_SECONDS each.
fuzz:
	scripts/fuzz

# Fault injection under load (database restarts, SIGTERM, stalls, JWKS outages, floods).
test-faults: all $(INTEG_BIN)
	B=$(B) PW_TEST_FILTER=integration/faults tests/run

# The integration tests with the worker under valgrind memcheck: no errors, no definite leaks.
test-valgrind: all $(INTEG_BIN)
	B=$(B) PW_TEST_VALGRIND=1 tests/run --integration-only

format:
	clang-format -i $(PROTO_SRC) $(WORKER_SRC) proto/*.h worker/*.h

# Static checks; any finding fails (cppcheck exit 1, clang-tidy warnings as errors). Two
# clang-analyzer checks are off: insecureAPI.DeprecatedOrUnsafeBufferHandling asks for C11
# Annex K (memcpy_s...), which glibc does not have; valist.Uninitialized reports every
# va_start/vsnprintf pair on x86-64 in clang 14 (llvm/llvm-project#40656, fixed in later clangs).
TIDY_CHECKS := -clang-analyzer-security.insecureAPI.DeprecatedOrUnsafeBufferHandling,-clang-analyzer-valist.Uninitialized
lint:
	cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability --std=c11 -I. proto worker
	clang-tidy --quiet --checks='$(TIDY_CHECKS)' --warnings-as-errors='*' $(PROTO_SRC) $(WORKER_SRC) -- $(CFLAGS)

clean:
	rm -rf build
