# ddpm.c build. `make` builds bin/ddpm; `make test` runs the test suite;
# `make run` sets up, trains the default config and writes samples.
# The CPU engine needs OpenBLAS, cJSON, libpng, zlib, libzip and stb (image folders). The CUDA
# toolkit, cuDNN, NCCL and MPI are detected and reported below.

CC      ?= gcc
ifeq ($(origin CC),default)
CC      := gcc
endif
OPT     ?= -O3 -march=native
CFLAGS  ?= $(OPT)
# WERROR=-Werror (as CI builds) makes every warning fail the build.
WERROR  ?=
CFLAGS  += -std=c11 -D_GNU_SOURCE -fno-math-errno -Wall -Wextra -Wno-unused-parameter $(WERROR) -fopenmp -Iinclude -MMD -MP
# OpenBLAS's OpenMP build shares the engine's OpenMP threads; the pthread build
# spins its own threads against them and runs several times slower.
comma         := ,
MULTIARCH     := $(shell $(CC) -print-multiarch 2>/dev/null)
OPENBLAS_DIR  ?= /usr/lib/$(MULTIARCH)/openblas-openmp
OPENBLAS_OMP  := $(firstword $(wildcard $(OPENBLAS_DIR)/libopenblas.so))
# OpenBLAS's own cblas.h (it declares openblas_set_num_threads), not whichever cblas.h
# the Debian alternatives point at.
OPENBLAS_INC  := $(firstword $(wildcard /usr/include/$(MULTIARCH)/openblas-openmp/cblas.h))
CFLAGS        += $(if $(OPENBLAS_INC),-I$(dir $(OPENBLAS_INC)),)
BLAS_LIBS     := $(if $(OPENBLAS_OMP),-L$(dir $(OPENBLAS_OMP)) -Wl$(comma)-rpath$(comma)$(dir $(OPENBLAS_OMP)),) -lopenblas
LDLIBS  += $(BLAS_LIBS) -lcjson -lpng -lz -lzip -lstb -lm -fopenmp -pthread
BUILD   ?= build
BIN     ?= bin

# src/ has one folder per layer (nn, cpu, diffusion, train, dist, io, cli); see README.
SRC        := $(wildcard src/*.c src/*/*.c)
LIB_OBJ    := $(patsubst src/%.c,$(BUILD)/%.o,$(filter-out src/cli/main.c,$(SRC)))
TEST_SRC   := $(wildcard tests/test_*.c)
TEST_BINS  := $(patsubst tests/%.c,$(BIN)/%,$(TEST_SRC))
# The benchmarks are built for the suite too: tests/e2e_cli.sh runs each for one step.
TEST_BINS  += $(BIN)/bench_train $(BIN)/bench_sample

# ---- detection: every line reports what was found, and where ----
CUDA_HOME ?= $(firstword $(wildcard /usr/local/cuda $(dir $(shell command -v nvcc 2>/dev/null)).. ))
NVCC      := $(firstword $(wildcard $(CUDA_HOME)/bin/nvcc) $(shell command -v nvcc 2>/dev/null))
CUDNN_H   := $(firstword $(wildcard $(CUDNN_HOME)/include/cudnn_version.h $(CUDA_HOME)/include/cudnn_version.h /usr/local/include/cudnn_version.h /usr/include/cudnn_version.h /usr/include/x86_64-linux-gnu/cudnn_version.h))
NCCL_H    := $(firstword $(wildcard $(NCCL_HOME)/include/nccl.h $(CUDA_HOME)/include/nccl.h /usr/local/include/nccl.h /usr/include/nccl.h))
MPICC     := $(shell command -v mpicc 2>/dev/null)
CUDNN_VER := $(if $(CUDNN_H),$(shell awk '/define CUDNN_MAJOR/{a=$$3}/define CUDNN_MINOR/{b=$$3}END{print a"."b}' $(CUDNN_H)))
NCCL_VER  := $(if $(NCCL_H),$(shell awk '/define NCCL_MAJOR/{a=$$3}/define NCCL_MINOR/{b=$$3}END{print a"."b}' $(NCCL_H)))
NVCC_VER  := $(if $(NVCC),$(shell $(NVCC) --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'))

# Data parallelism over MPI (the CPU backend's collectives, and NCCL's bootstrap) is
# built when mpicc is found; MPI=0 turns it off.
MPI ?= $(if $(MPICC),1,0)
ifeq ($(MPI),1)
ifeq ($(MPICC),)
$(error MPI=1 but no mpicc was found: install libopenmpi-dev, or build with MPI=0)
endif
MPI_CFLAGS := $(shell $(MPICC) --showme:compile 2>/dev/null || $(MPICC) -compile_info 2>/dev/null | cut -d' ' -f2- | tr ' ' '\n' | grep '^-I' | tr '\n' ' ')
MPI_LIBS   := $(shell $(MPICC) --showme:link 2>/dev/null || $(MPICC) -link_info 2>/dev/null | cut -d' ' -f2- | tr ' ' '\n' | grep '^-[lLW]' | tr '\n' ' ')
CFLAGS  += -DDDPM_MPI $(MPI_CFLAGS)
LDLIBS  += $(MPI_LIBS)
endif

# The CPU convolutions run on oneDNN's direct NHWC kernels when its header is found
# (libdnnl-dev, which tools/setup.sh installs); ONEDNN=0 keeps the im2col path alone.
ONEDNN_H := $(firstword $(wildcard /usr/include/oneapi/dnnl/dnnl.h /usr/local/include/oneapi/dnnl/dnnl.h))
ONEDNN   ?= $(if $(ONEDNN_H),1,0)
ifeq ($(ONEDNN),1)
ifeq ($(ONEDNN_H),)
$(error ONEDNN=1 but oneapi/dnnl/dnnl.h was not found: install libdnnl-dev, or build with ONEDNN=0)
endif
CFLAGS  += -DDDPM_ONEDNN
LDLIBS  += -ldnnl
endif

# The CUDA backend (kernels/) is built when nvcc and cuDNN are found; CUDA=0 turns it off.
CUDA ?= $(if $(and $(NVCC),$(CUDNN_H)),1,0)
ifeq ($(CUDA),1)
include kernels/cuda.mk
CFLAGS  += -DDDPM_CUDA
LIB_OBJ += $(CUDA_OBJ)
LDLIBS  += $(CUDA_LDLIBS)
endif

.PHONY: all detect setup test test-sanitize test-fuzz fuzz run clean
all: detect $(BIN)/ddpm

detect:
	@echo "$(if $(NVCC),✓ CUDA toolkit $(NVCC_VER) ($(NVCC)),✗ CUDA toolkit (no nvcc; set CUDA_HOME))"
	@echo "$(if $(CUDNN_H),✓ cuDNN $(CUDNN_VER) ($(dir $(CUDNN_H))),✗ cuDNN (no cudnn_version.h; set CUDNN_HOME))"
	@echo "$(if $(NCCL_H),✓ NCCL $(NCCL_VER) ($(dir $(NCCL_H))),✗ NCCL (no nccl.h; set NCCL_HOME): no multi-GPU training)"
	@echo "$(if $(filter 1,$(MPI)),✓ MPI data parallelism ($(MPICC)),✗ MPI data parallelism (MPI=0 or no mpicc: install libopenmpi-dev))"
	@echo "$(if $(OPENBLAS_OMP),✓ OpenBLAS OpenMP build ($(dir $(OPENBLAS_OMP))),✗ OpenBLAS OpenMP build (install libopenblas-openmp-dev: the pthread build is much slower here))"
	@echo "$(if $(filter 1,$(ONEDNN)),✓ oneDNN CPU convolutions ($(ONEDNN_H)),✗ oneDNN CPU convolutions (ONEDNN=0 or no libdnnl-dev): the slower im2col path)"
	@echo "✓ CPU backend (cJSON, libpng, zlib, libzip, stb)"
	@echo "$(if $(filter 1,$(CUDA)),✓ CUDA backend will be built,✗ CUDA backend not built (CUDA=0 or no nvcc/cuDNN))"

$(BUILD)/%.o: src/%.c | $(BUILD)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/tests/%.o: tests/%.c | $(BUILD)
	@mkdir -p $(BUILD)/tests
	$(CC) $(CFLAGS) -Itests -Isrc/cpu -c $< -o $@

$(BIN)/ddpm: $(BUILD)/cli/main.o $(LIB_OBJ) | $(BIN)
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

$(BIN)/test_%: $(BUILD)/tests/test_%.o $(LIB_OBJ) | $(BIN)
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD) $(BIN):
	@mkdir -p $@

# `make run` and `make test` install the Debian packages first (or print the one line that
# would, and stop). They have no prerequisites that compile, so nothing is built before
# SETUP finishes, even with -j; the builds run in a sub-make that reads this file again
# and so sees what SETUP installed (mpicc, say). SETUP=true skips it.
SETUP   ?= bash tools/setup.sh

setup:
	@$(SETUP)

# The suite: unit tests (C), then end-to-end tests of bin/ddpm (shell), then the
# same again under AddressSanitizer + UndefinedBehaviorSanitizer.
test:
	@$(SETUP)
	@$(MAKE) --no-print-directory detect $(BIN)/ddpm $(TEST_BINS)
	@bash tests/run_tests.sh $(BIN)
	@$(MAKE) --no-print-directory test-sanitize
	@$(MAKE) --no-print-directory test-fuzz

test-sanitize:
	@$(MAKE) --no-print-directory BUILD=build-san BIN=bin-san CUDA=0 \
	    OPT="-O2 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	    bin-san/ddpm $(patsubst $(BIN)/%,bin-san/%,$(TEST_BINS))
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
	    DDPM_SANITIZE=1 bash tests/run_tests.sh bin-san

# Coverage-guided fuzzing of the loaders (tests/fuzz/): libFuzzer through clang, with
# ASan and UBSan. `make fuzz` builds bin-fuzz/fuzz_*; tests/fuzz/run_fuzz.sh runs them.
FUZZ_BINS := $(patsubst tests/fuzz/%.c,bin-fuzz/%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_SECONDS ?= 30
fuzz:
	@command -v clang >/dev/null || { echo "make fuzz: clang not found (install clang)"; exit 1; }
	@$(MAKE) --no-print-directory BUILD=build-fuzz BIN=bin-fuzz CC=clang CUDA=0 \
	    OPT="-O1 -g -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	    $(FUZZ_BINS)

# Each target over its seed corpus, then FUZZ_SECONDS of fuzzing; skipped without clang.
# Two lines: make -n runs a line that holds $(MAKE), so the fuzzers' run stands apart.
test-fuzz:
	@if command -v clang >/dev/null; then $(MAKE) --no-print-directory fuzz; \
	else echo "SKIP fuzzing (no clang: install clang for libFuzzer)"; fi
	@if command -v clang >/dev/null; then bash tests/fuzz/run_fuzz.sh $(FUZZ_SECONDS); fi

$(BIN)/fuzz_%: $(BUILD)/tests/fuzz/fuzz_%.o $(LIB_OBJ) | $(BIN)
	$(CC) $(CFLAGS) -fsanitize=fuzzer $^ -o $@ $(LDLIBS)

# Kept, so that a second `make fuzz` relinks nothing.
.PRECIOUS: $(BUILD)/tests/fuzz/%.o
$(BUILD)/tests/fuzz/%.o: tests/fuzz/%.c | $(BUILD)
	@mkdir -p $(BUILD)/tests/fuzz
	$(CC) $(CFLAGS) -Itests/fuzz -c $< -o $@

run:
	@$(SETUP)
	@$(MAKE) --no-print-directory detect $(BIN)/ddpm
	@BIN=$(BIN) bash tools/run_default.sh

clean:
	rm -rf build build-san build-fuzz bin bin-san bin-fuzz

-include $(wildcard $(BUILD)/*.d $(BUILD)/*/*.d $(BUILD)/*/*/*.d)

# Benchmarks (tools/): built like the tests, run by hand or by tools/bench_cpu.sh.
$(BIN)/bench_%: $(BUILD)/tools/bench_%.o $(LIB_OBJ) | $(BIN)
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

# Their JSON lines name the commit they were built from (COMMIT=... overrides, e.g. where
# the tree travels without .git); the stamp rebuilds them when it changes.
COMMIT ?= $(shell git describe --always --dirty --abbrev=7 2>/dev/null || echo unknown)
$(BUILD)/commit.txt: FORCE | $(BUILD)
	@[ "$$(cat $@ 2>/dev/null)" = "$(COMMIT)" ] || echo "$(COMMIT)" > $@

$(BUILD)/tools/%.o: tools/%.c $(BUILD)/commit.txt | $(BUILD)
	@mkdir -p $(BUILD)/tools
	$(CC) $(CFLAGS) -DDDPM_COMMIT='"$(COMMIT)"' -c $< -o $@

.PHONY: FORCE
FORCE:
