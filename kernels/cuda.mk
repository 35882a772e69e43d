# Placeholder until the CUDA backend lands: defines nothing to build.
CUDA_OBJ :=
CUDA_LDLIBS :=
