# The CUDA backend's build, included by the Makefile when CUDA=1. It uses the
# Makefile's CUDA_HOME, NVCC and CUDNN_H, and defines:
#   CUDA_OBJ     the backend's objects, $(BUILD)/kernels/*.o
#   CUDA_LDLIBS  cudart, cuBLAS, cuDNN and NCCL (by path, with an rpath to each directory)
# and takes src/backend_cuda_stub.c's object out of LIB_OBJ (see below).
# Headers and libraries are looked for in CUDNN_HOME, next to the cudnn_version.h the
# Makefile found, in CUDA_HOME, in the system directories, and last in pip's nvidia-*
# wheels (nvidia/cudnn/include, nvidia/cudnn/lib, ...). See docs/GPU.md.

ifeq ($(NVCC),)
$(error CUDA=1 but no nvcc was found: set CUDA_HOME, or build with CUDA=0)
endif

cuda_comma := ,
cuda_multiarch := $(shell $(CC) -print-multiarch 2>/dev/null)

# pip's nvidia-* packages, asked only when cuDNN was not found elsewhere (the
# python3 call costs ~50 ms); nvidia is a namespace package, hence __path__.
ifeq ($(CUDNN_H),)
CUDA_PIP_ROOT := $(shell python3 -c 'import nvidia; print(list(nvidia.__path__)[0])' 2>/dev/null)
CUDNN_H := $(firstword $(wildcard $(CUDA_PIP_ROOT)/cudnn/include/cudnn_version.h))
endif
ifeq ($(CUDNN_H),)
$(error CUDA=1 but cuDNN was not found: set CUDNN_HOME (the directory holding include/cudnn.h))
endif
CUDNN_INC := $(patsubst %/,%,$(dir $(CUDNN_H)))

# The first lib<name>.so (or lib<name>.so.N, as pip's wheels ship only that) in the dirs.
cuda_find_lib = $(firstword $(foreach d,$(2),$(wildcard $(d)/lib$(1).so $(d)/lib$(1).so.[0-9]*)))
CUDA_LIB_DIRS := $(CUDA_HOME)/lib64 $(CUDA_HOME)/lib $(CUDA_HOME)/targets/x86_64-linux/lib \
                 /usr/lib/$(cuda_multiarch) /usr/local/lib /usr/lib
CUDNN_LIB_DIRS := $(if $(CUDNN_HOME),$(CUDNN_HOME)/lib64 $(CUDNN_HOME)/lib) \
                  $(CUDNN_INC)/../lib64 $(CUDNN_INC)/../lib $(CUDA_LIB_DIRS)
CUDART_LIB := $(call cuda_find_lib,cudart,$(CUDA_LIB_DIRS) $(CUDA_PIP_ROOT)/cuda_runtime/lib)
CUBLAS_LIB := $(call cuda_find_lib,cublas,$(CUDA_LIB_DIRS) $(CUDA_PIP_ROOT)/cublas/lib)
CUDNN_LIB  := $(call cuda_find_lib,cudnn,$(CUDNN_LIB_DIRS))
$(foreach lib,CUDART_LIB CUBLAS_LIB CUDNN_LIB,$(if $($(lib)),,\
    $(error CUDA=1 but $(lib) was not found: set CUDA_HOME or CUDNN_HOME)))

# NCCL, for data parallelism across GPUs: beside the nccl.h the Makefile found.
NCCL_INC := $(if $(NCCL_H),$(patsubst %/,%,$(dir $(NCCL_H))))
NCCL_LIB := $(if $(NCCL_H),$(call cuda_find_lib,nccl,$(if $(NCCL_HOME),$(NCCL_HOME)/lib64 \
              $(NCCL_HOME)/lib) $(NCCL_INC)/../lib64 $(NCCL_INC)/../lib $(CUDA_LIB_DIRS)))
NCCL_FLAGS := $(if $(NCCL_LIB),-DDDPM_NCCL -I$(NCCL_INC))

CUDA_LIBS   := $(abspath $(CUDART_LIB) $(CUBLAS_LIB) $(CUDNN_LIB) $(NCCL_LIB))
CUDA_RPATHS := $(foreach d,$(sort $(dir $(CUDA_LIBS))),-Wl$(cuda_comma)-rpath$(cuda_comma)$(d))
CUDA_LDLIBS := $(CUDA_LIBS) $(CUDA_RPATHS) -lstdc++

# sm_80 (A100) and sm_90 (H100/H200) machine code, compute_90 PTX for newer GPUs to
# JIT, and machine code for the GPUs of this machine when nvidia-smi reports them.
CUDA_LOCAL_ARCHS := $(shell nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null \
                      | tr -d . | sort -u)
CUDA_ARCHS  := $(sort 80 90 $(filter-out 80 90,$(CUDA_LOCAL_ARCHS)))
NVCC_GENCODE := $(foreach a,$(CUDA_ARCHS),-gencode arch=compute_$(a),code=sm_$(a)) \
                -gencode arch=compute_90,code=compute_90
NVCC_OPT   ?= -O3
NVCC_FLAGS := $(NVCC_OPT) -std=c++17 --extended-lambda -Iinclude -Ikernels -I$(CUDNN_INC) $(NCCL_FLAGS) \
              $(NVCC_GENCODE) -Xcompiler -Wall,-Wextra,-Wno-unused-parameter -MMD -MP

CUDA_OBJ := $(patsubst kernels/%.cu,$(BUILD)/kernels/%.o,$(wildcard kernels/*.cu))
# kernels/backend_cuda.cu defines backend_cuda(), so the stub's object stays out of a
# CUDA build. Leaving it out (rather than compiling it empty under -DDDPM_CUDA) also
# means a stub object built by an earlier CUDA=0 make can never clash at link time:
# make does not rebuild objects when only CFLAGS change.
LIB_OBJ := $(filter-out $(BUILD)/backend_cuda_stub.o,$(LIB_OBJ))

$(BUILD)/kernels/%.o: kernels/%.cu | $(BUILD)
	@mkdir -p $(BUILD)/kernels
	$(NVCC) $(NVCC_FLAGS) -c $< -o $@

-include $(wildcard $(BUILD)/kernels/*.d)
