/* Shared by every CUDA file of the backend: error checks, the context (one stream,
 * one cuBLAS and one cuDNN handle, a scratch buffer for partial sums), and the small
 * device helpers the kernels have in common (blend, sigmoid, deterministic
 * warp/block sums, an elementwise launcher).
 *
 * Every CUDA, cuBLAS and cuDNN call is wrapped in a check that prints file:line, the
 * call and the library's error string, and exits with status 1: an op either does
 * its work or stops the program, as the CPU backend's allocation failures do. */
#ifndef DDPM_CUDA_COMMON_CUH
#define DDPM_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <stdio.h>
#include <stdlib.h>

extern "C" {
#include "backend.h"
#include "util.h"
}

/* ---- error checks ---- */

static inline void cuda_check(cudaError_t status, const char *call, const char *file, int line) {
    if (status == cudaSuccess) return;
    fprintf(stderr, "%s:%d: CUDA error %s: %s\n    in %s\n", file, line, cudaGetErrorName(status),
            cudaGetErrorString(status), call);
    exit(1);
}

static inline void cublas_check(cublasStatus_t status, const char *call, const char *file,
                                int line) {
    if (status == CUBLAS_STATUS_SUCCESS) return;
    fprintf(stderr, "%s:%d: cuBLAS error %s\n    in %s\n", file, line,
            cublasGetStatusString(status), call);
    exit(1);
}

static inline void cudnn_check(cudnnStatus_t status, const char *call, const char *file,
                               int line) {
    if (status == CUDNN_STATUS_SUCCESS) return;
    fprintf(stderr, "%s:%d: cuDNN error %s\n    in %s\n", file, line, cudnnGetErrorString(status),
            call);
    exit(1);
}

#define cudaCheck(call) cuda_check((call), #call, __FILE__, __LINE__)
#define cublasCheck(call) cublas_check((call), #call, __FILE__, __LINE__)
#define cudnnCheck(call) cudnn_check((call), #call, __FILE__, __LINE__)
/* after every kernel launch: a bad configuration is reported where it happened */
#define cudaCheckLaunch() cudaCheck(cudaGetLastError())

/* ---- the context, set up once by backend_cuda() ---- */

typedef struct {
    cudaStream_t stream;       /* every op and copy is queued on it, in program order */
    cublasHandle_t cublas;     /* bound to stream; strict fp32 unless tf32 */
    cudnnHandle_t cudnn;       /* bound to stream */
    int tf32;                  /* DDPM_TF32=1: TF32 tensor cores in cuBLAS and cuDNN */
    double *scratch;           /* (scratch_doubles) partial sums of the two-pass reductions */
    size_t scratch_doubles;
    void *cublas_workspace;    /* (CUBLAS_WORKSPACE_BYTES) handed to cuBLAS once */
    cudaEvent_t host_copies;   /* recorded after each to_host_async; wait_host_copies waits on it */
} CudaContext;

extern CudaContext cuda;

/* ---- device helpers ---- */

enum { THREADS = 256 };        /* block size of the elementwise and reduction kernels */

/* beta*old + v where beta 0 ignores old, even a NaN: the backward ops' accumulate rule. */
__device__ __forceinline__ float blend(float old, float beta, float v) {
    return beta == 0.0f ? v : beta * old + v;
}

__device__ __forceinline__ float sigmoid(float v) { return 1.0f / (1.0f + expf(-v)); }

/* include/bf16.h's bf16_round on the device, the same integer steps (round to nearest,
 * ties to even; NaN stays a quiet NaN; overflow carries into Inf), so the CUDA emulation
 * of bf16 matches the CPU's bit for bit. */
__device__ __forceinline__ float bf16_round_device(float f) {
    unsigned int bits = __float_as_uint(f);
    if ((bits & 0x7fffffffu) > 0x7f800000u)   /* NaN: keep the sign, force quiet */
        return __uint_as_float((bits | 0x00400000u) & 0xffff0000u);
    bits = (bits + 0x7fffu + ((bits >> 16) & 1u)) & 0xffff0000u;
    return __uint_as_float(bits);
}

/* Butterfly sums: lanes i and i^offset add the same two numbers (a+b == b+a exactly),
 * so every lane ends with the same total, in an order fixed by the lane numbers. */
__device__ __forceinline__ double warp_sum(double v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;   /* in every lane */
}

__device__ __forceinline__ float warp_max(float v) {
    for (int offset = 16; offset > 0; offset >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;   /* in every lane */
}

/* The block's total of v, returned to every thread. The order of the additions is
 * fixed by the block size alone, so the result is reproducible run to run.
 * Call from all threads of a block of THREADS threads. */
__device__ __forceinline__ double block_sum(double v) {
    __shared__ double warp_totals[THREADS / 32];
    __shared__ double total;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    v = warp_sum(v);
    if (lane == 0) warp_totals[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = warp_sum(lane < THREADS / 32 ? warp_totals[lane] : 0.0);
        if (lane == 0) total = v;
    }
    __syncthreads();
    v = total;
    __syncthreads();   /* total and warp_totals may be reused by the next call */
    return v;
}

/* f(i) for i in [0, n): grid-stride loop, so any n fits a bounded grid. */
template <class F>
__global__ void elementwise_kernel(size_t n, F f) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        f(i);
}

template <class F>
static void launch_elementwise(size_t n, F f) {
    if (n == 0) return;
    const size_t max_blocks = 8192;
    const size_t blocks = (n + THREADS - 1) / THREADS;
    elementwise_kernel<<<(unsigned)(blocks < max_blocks ? blocks : max_blocks), THREADS, 0,
                         cuda.stream>>>(n, f);
    cudaCheckLaunch();
}

#endif
