/* The CPU backend's GEMMs (cpu_gemm.c): oneDNN's matmul where the build has it, else
 * OpenBLAS; DDPM_CPU_GEMM=openblas|onednn picks one for a run. */
#ifndef DDPM_CPU_GEMM_H
#define DDPM_CPU_GEMM_H

#include <stddef.h>

typedef enum { GEMM_PATH_OPENBLAS = 0, GEMM_PATH_ONEDNN = 1 } CpuGemmPath;

/* For each of `batch` (at least 1) problems i, row-major like cblas_sgemm:
 *   C_i (M, N) = alpha * op(A_i) (M, K) op(B_i) (K, N) + beta * C_i,
 * A_i = a + i*stride_a stored (M, K) with leading dimension lda, or (K, M) when trans_a;
 * B_i = b + i*stride_b stored (K, N) with ldb, or (N, K) when trans_b; C_i = c + i*stride_c. */
typedef struct {
    int batch, m, n, k;
    int trans_a, trans_b;
    int lda, ldb, ldc;
    size_t stride_a, stride_b, stride_c;
    float alpha, beta;
} GemmCall;

void cpu_gemm(const GemmCall *call, const float *a, const float *b, float *c);
/* Whether oneDNN has a kernel for the call (else cpu_gemm hands it to OpenBLAS): the tests. */
int cpu_gemm_onednn_runs(const GemmCall *call);

/* The process's choice (DDPM_CPU_GEMM, else the build's best); a bad value dies naming it. */
CpuGemmPath cpu_gemm_path(void);
/* Overrides the choice (tests and benchmarks). Returns 0, or -1 when the build lacks it. */
int cpu_gemm_set_path(CpuGemmPath path);
const char *cpu_gemm_path_name(CpuGemmPath path);

#endif
