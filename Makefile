# chatbridge: the front door.
#
#   make            build the nginx module and the sidecar
#   make run        start nginx + module + sidecar on 127.0.0.1:$(PORT)
#   make test       install what is missing, build, run every test tier
#   make bench      the benchmark suite (writes docs/BENCHMARKS.md)
#   make lint       style checks and leftover debug switches
#   make deb        Debian packages into $(BUILD)/deb/ (docs/PACKAGES.md)
#   make clean
#
# Knobs: PORT (5102), BUILD (build), SANITIZE=address, DEBUG=1.

PORT      ?= 5102
BUILD     ?= build
NGINX_SRC ?= /usr/share/nginx/src
SANITIZE  ?=
DEBUG     ?=

CC        ?= cc
CXX       ?= g++

MODULE     = $(BUILD)/nginx/ngx_http_chatbridge_module.so
SIDECAR    = $(BUILD)/chatbridge-sidecar

OPT        = $(if $(DEBUG),-O0 -g3,-O2 -g)
SAN        = $(if $(SANITIZE),-fsanitize=$(SANITIZE) -fno-omit-frame-pointer)

WARN       = -Wall -Wextra -Werror
CFLAGS_CB  = -std=gnu11 $(OPT) $(SAN) $(WARN) -Icommon -Ingx_chatbridge_module
CXXFLAGS_CB = -std=c++17 $(OPT) $(SAN) $(WARN) -Icommon -I$(BUILD)/sidecar \
             -Ingx_chatbridge_module \
             $(shell pkg-config --cflags libwebsockets jansson 2>/dev/null)
LIBS_SIDECAR = $(shell pkg-config --libs libwebsockets jansson 2>/dev/null)
LIBS_CHECK   = $(shell pkg-config --cflags --libs check jansson 2>/dev/null)

MODULE_SRCS  = config $(wildcard ngx_chatbridge_module/*.[ch]) \
               $(wildcard common/*.[ch])
SIDECAR_SRCS = $(wildcard lws-sidecar/*.cc)
SIDECAR_OBJS = $(patsubst lws-sidecar/%.cc,$(BUILD)/sidecar/%.o,\
               $(filter-out %_test.cc,$(SIDECAR_SRCS)))
SPEC         = browser/protocol/protocol-v1.json

UNIT_TESTS   = $(BUILD)/tests/cb_shm_test $(BUILD)/tests/cb_json_test \
               $(BUILD)/tests/cb_openai_test $(BUILD)/tests/cb_jsonc_test \
               $(BUILD)/tests/cb_arena_test $(BUILD)/tests/frames_test

.PHONY: all module sidecar userscript sillytavern run test unit prove node-tests browser-tests \
        bench bench-smoke bench-bin lint clean deps deps-test

# a recipe that fails leaves no half-written target behind to pass for
# an up-to-date one next time
.DELETE_ON_ERROR:

all: module sidecar userscript sillytavern

# $(call flags_stamp,FILE,TEXT): FILE holds TEXT, rewritten (so newer) only
# when TEXT changed since the last make: a prerequisite that brings a target
# up to date with the flags it was built with.  Done as make reads this
# file, so that make -n and make -q see it too.
#
# A stamp that is missing when make needs it (make clean all: clean deletes
# it after make read this file) is written again by its rule (flags_write)
# and counts as remade, so what depends on it is built again.
flags_write = mkdir -p $(dir $(1)) && \
    printf '%s\n' '$(subst ','\'',$(2))' > $(1)
flags_stamp = $(shell \
    if [ "$$(cat $(1) 2>/dev/null)" != '$(subst ','\'',$(2))' ]; then \
        $(call flags_write,$(1),$(2)); fi)

deps:
	@util/deps.sh run

deps-test:
	@util/deps.sh test

# --- the nginx module, against Debian's nginx-dev and its configure flags

# configured again when the module's config, the script, nginx-dev's flags
# or the flags it was configured with change (SANITIZE, CC, the hardening
# make deb asks for); configure rewrites ngx_auto_config.h, on which every
# object of the module depends, so the module is then built again
#
# nginx-dev's version is in the flags too: an update of nginx-dev that
# leaves conf_flags as it was still configures and builds the module again
NGINX_DEV_VERSION := $(shell dpkg-query -W -f='$${Version}' nginx-dev \
                       2>/dev/null)
MODULE_FLAGS = $(BUILD)/nginx/configure.flags
MODULE_FLAGS_TEXT = SAN=$(SAN) CC=$(CC) NGINX_SRC=$(NGINX_SRC) \
    nginx-dev=$(NGINX_DEV_VERSION) $(DEB_BUILD_MAINT_OPTIONS)
$(call flags_stamp,$(MODULE_FLAGS),$(MODULE_FLAGS_TEXT))

$(MODULE_FLAGS):
	@$(call flags_write,$@,$(MODULE_FLAGS_TEXT))

$(BUILD)/nginx/Makefile: config util/configure-module.sh $(MODULE_FLAGS) \
                         $(wildcard $(NGINX_SRC)/conf_flags)
	NGINX_SRC=$(NGINX_SRC) util/configure-module.sh $(BUILD)/nginx \
	    "$(SAN)" "$(SAN)"

module: $(BUILD)/nginx/Makefile
	@$(MAKE) --no-print-directory -f $(abspath $(BUILD)/nginx/Makefile) \
	    -C $(NGINX_SRC) modules

# --- the LMArena userscript, as nginx serves it (chatbridge_userscript)

USERSCRIPT   = $(BUILD)/chatbridge.user.js

userscript: $(USERSCRIPT)

$(USERSCRIPT): $(wildcard browser/userscript/*.js) browser/common/cb-protocol.js \
               browser/userscript/build.sh
	@mkdir -p $(dir $@)
	browser/userscript/build.sh $@

# --- the SillyTavern extension as a folder of its own (build/sillytavern/)

ST_EXTENSION = $(BUILD)/sillytavern/index.js

sillytavern: $(ST_EXTENSION)

$(ST_EXTENSION): $(wildcard browser/sillytavern/*) browser/common/cb-protocol.js
	browser/sillytavern/build.sh $(BUILD)/sillytavern

# --- the sidecar

$(BUILD)/sidecar/protocol_spec.inc: $(SPEC)
	@mkdir -p $(dir $@)
	util/embed-spec.sh $< > $@

# every object, and the link, again when the flags change (SANITIZE, DEBUG,
# CC, CXX, the libraries' flags), as the module's are
SIDECAR_FLAGS = $(BUILD)/sidecar/build.flags
SIDECAR_FLAGS_TEXT = CC=$(CC) CXX=$(CXX) $(CFLAGS_CB) $(CXXFLAGS_CB) \
    $(LIBS_SIDECAR) $(shell pkg-config --cflags jansson 2>/dev/null)
$(call flags_stamp,$(SIDECAR_FLAGS),$(SIDECAR_FLAGS_TEXT))

$(SIDECAR_FLAGS):
	@$(call flags_write,$@,$(SIDECAR_FLAGS_TEXT))

$(BUILD)/sidecar/%.o: lws-sidecar/%.cc $(BUILD)/sidecar/protocol_spec.inc \
                      $(SIDECAR_FLAGS)
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS_CB) -MMD -MP -c $< -o $@

$(BUILD)/sidecar/cb_shm.o: common/cb_shm.c common/cb_shm.h $(SIDECAR_FLAGS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_CB) -c $< -o $@

# the module's plain C it shares: the JSONC files, and the checks nginx
# makes of the LMArena files (cb_arena.c, which needs cb_openai.c for its
# errors and that cb_json.c)
SIDECAR_MODULE_OBJS = $(BUILD)/sidecar/cb_jsonc.o $(BUILD)/sidecar/cb_arena.o \
                      $(BUILD)/sidecar/cb_openai.o $(BUILD)/sidecar/cb_json.o

$(SIDECAR_MODULE_OBJS): $(BUILD)/sidecar/%.o: ngx_chatbridge_module/%.c \
                                             $(SIDECAR_FLAGS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_CB) $(shell pkg-config --cflags jansson) -MMD -MP \
	    -c $< -o $@

$(SIDECAR): $(SIDECAR_OBJS) $(BUILD)/sidecar/cb_shm.o $(SIDECAR_MODULE_OBJS) \
            $(SIDECAR_FLAGS)
	$(CXX) $(SAN) -o $@ $(filter %.o,$^) $(LIBS_SIDECAR)

sidecar: $(SIDECAR)

-include $(wildcard $(BUILD)/sidecar/*.d)

# --- unit tests (Check), beside the code they test; each lists the
#     headers its sources include, and is built again when the flags change

TESTS_FLAGS = $(BUILD)/tests/build.flags
TESTS_FLAGS_TEXT = CC=$(CC) CXX=$(CXX) $(CFLAGS_CB) $(CXXFLAGS_CB)
$(call flags_stamp,$(TESTS_FLAGS),$(TESTS_FLAGS_TEXT))

$(TESTS_FLAGS):
	@$(call flags_write,$@,$(TESTS_FLAGS_TEXT))

$(UNIT_TESTS): common/cb_check.h $(TESTS_FLAGS)

$(BUILD)/tests/cb_shm_test: common/cb_shm_test.c common/cb_shm.c \
                            common/cb_shm.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_CB) -o $@ common/cb_shm_test.c common/cb_shm.c \
	    $(LIBS_CHECK)

$(BUILD)/tests/cb_json_test: ngx_chatbridge_module/cb_json_test.c \
                             ngx_chatbridge_module/cb_json.c \
                             ngx_chatbridge_module/cb_json.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_CB) -o $@ ngx_chatbridge_module/cb_json_test.c \
	    ngx_chatbridge_module/cb_json.c $(LIBS_CHECK)

$(BUILD)/tests/cb_openai_test: ngx_chatbridge_module/cb_openai_test.c \
                               ngx_chatbridge_module/cb_openai.c \
                               ngx_chatbridge_module/cb_openai.h \
                               ngx_chatbridge_module/cb_json.c \
                               ngx_chatbridge_module/cb_json.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_CB) -o $@ ngx_chatbridge_module/cb_openai_test.c \
	    ngx_chatbridge_module/cb_openai.c ngx_chatbridge_module/cb_json.c \
	    $(LIBS_CHECK)

$(BUILD)/tests/cb_jsonc_test: ngx_chatbridge_module/cb_jsonc_test.c \
                              ngx_chatbridge_module/cb_jsonc.c \
                              ngx_chatbridge_module/cb_jsonc.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_CB) -o $@ ngx_chatbridge_module/cb_jsonc_test.c \
	    ngx_chatbridge_module/cb_jsonc.c $(LIBS_CHECK)

$(BUILD)/tests/cb_arena_test: ngx_chatbridge_module/cb_arena_test.c \
                              ngx_chatbridge_module/cb_arena.c \
                              ngx_chatbridge_module/cb_arena.h \
                              ngx_chatbridge_module/cb_openai.c \
                              ngx_chatbridge_module/cb_openai.h \
                              ngx_chatbridge_module/cb_json.c \
                              ngx_chatbridge_module/cb_json.h \
                              ngx_chatbridge_module/cb_jsonc.c \
                              ngx_chatbridge_module/cb_jsonc.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_CB) -o $@ ngx_chatbridge_module/cb_arena_test.c \
	    ngx_chatbridge_module/cb_arena.c ngx_chatbridge_module/cb_openai.c \
	    ngx_chatbridge_module/cb_json.c ngx_chatbridge_module/cb_jsonc.c \
	    $(LIBS_CHECK)

$(BUILD)/tests/frames_test: lws-sidecar/frames_test.cc lws-sidecar/frames.h \
                            $(BUILD)/sidecar/frames.o \
                            $(BUILD)/sidecar/protocol_spec.inc
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS_CB) -o $@ lws-sidecar/frames_test.cc \
	    $(BUILD)/sidecar/frames.o $(LIBS_CHECK)

# --- the two commands: what is missing is installed before anything is
#     built (in that order also under make -j), then the build, then the
#     scripts, told where it is (BUILD)

run: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) util/run.sh $(PORT)

test: deps-test
	@$(MAKE) --no-print-directory all $(UNIT_TESTS) bench-bin
	@BUILD=$(BUILD) util/test.sh

unit: $(UNIT_TESTS)
	@BUILD=$(BUILD) util/test.sh unit

prove: all
	@BUILD=$(BUILD) util/test.sh prove

node-tests: all
	@BUILD=$(BUILD) util/test.sh node

browser-tests: all
	@BUILD=$(BUILD) util/test.sh browser

.PHONY: sillytavern-tests
sillytavern-tests: all
	@BUILD=$(BUILD) util/test.sh sillytavern

bench:
	@util/deps.sh bench
	@$(MAKE) --no-print-directory all bench-bin
	@BUILD=$(BUILD) bench/run.sh

bench-smoke:
	@util/deps.sh bench
	@$(MAKE) --no-print-directory all bench-bin
	@BUILD=$(BUILD) prove bench/selftest.t
	@BUILD=$(BUILD) BENCH_QUICK=1 bench/run.sh

# --- the benchmark's own programs (always -O2, no sanitizer)

BENCH_BIN    = $(BUILD)/bench/cb_load $(BUILD)/bench/cb_browser \
               $(BUILD)/bench/cb_sse_server $(BUILD)/bench/cb_spin
BENCH_CFLAGS = -std=gnu11 -O2 -g $(WARN) -Wno-unused-parameter -D_GNU_SOURCE -Ibench

bench-bin: $(BENCH_BIN)

$(BUILD)/bench/cb_spin: bench/cb_spin.c
	@mkdir -p $(dir $@)
	$(CC) $(BENCH_CFLAGS) -o $@ $<

$(BUILD)/bench/%: bench/%.c bench/bench.c bench/bench.h
	@mkdir -p $(dir $@)
	$(CC) $(BENCH_CFLAGS) -o $@ $< bench/bench.c

$(BUILD)/bench/cb_browser: bench/cb_browser.c bench/bench.c bench/bench.h
	@mkdir -p $(dir $@)
	$(CC) $(BENCH_CFLAGS) $(shell pkg-config --cflags jansson) -o $@ \
	    bench/cb_browser.c bench/bench.c $(shell pkg-config --libs jansson)

# --- Debian packages: a release build of their own in $(BUILD)/deb/build
#     (dpkg-buildflags with all hardening, no sanitizer, whatever SANITIZE
#     and DEBUG say), then packaging/build-deb.sh.  The flags ride on CC and
#     CXX, which every compile and link line uses; the module's configure
#     asks dpkg-buildflags itself.

DEB_BUILD    = $(BUILD)/deb/build
DEB_HARDEN   = DEB_BUILD_MAINT_OPTIONS=hardening=+all
DEB_FLAGS    = $(shell $(DEB_HARDEN) dpkg-buildflags --get CPPFLAGS) \
               $(shell $(DEB_HARDEN) dpkg-buildflags --get $(1)) \
               $(shell $(DEB_HARDEN) dpkg-buildflags --get LDFLAGS)

.PHONY: deb

deb:
	@util/deps.sh deb
	@$(DEB_HARDEN) $(MAKE) --no-print-directory BUILD=$(DEB_BUILD) \
	    SANITIZE= DEBUG= \
	    CC="$(CC) $(call DEB_FLAGS,CFLAGS)" \
	    CXX="$(CXX) $(call DEB_FLAGS,CXXFLAGS)" all
	@packaging/build-deb.sh $(DEB_BUILD) $(BUILD)/deb

lint:
	@util/lint.sh

clean:
	rm -rf $(BUILD)

# make clean all: clean first, then the rest, also under make -j
ifneq ($(filter clean,$(MAKECMDGOALS)),)
.NOTPARALLEL:
endif
