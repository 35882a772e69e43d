/* The CUDA backend table, generated from BACKEND_OPS: device memory on one stream, and the
 * ops of cuda_ops.cuh.
 *
 * backend_cuda() returns NULL, quietly, when there is no driver or no device, so a
 * CUDA-enabled build runs anywhere. Otherwise it sets the context up once (device 0
 * of those visible, a stream, cuBLAS and cuDNN bound to it, the reduction scratch
 * and cuBLAS's workspace) and returns the table.
 *
 * Copies: to_device queues the copy on the stream; the host buffer may be reused as
 * soon as it returns (the backend's callers pass pageable memory, which CUDA stages
 * before returning). to_host waits for the stream, so the host sees every op queued
 * before it. Environment: DDPM_TF32=1 allows TF32 tensor cores in cuBLAS and cuDNN
 * (strict fp32 otherwise); DDPM_CONV_VERBOSE=1 prints each conv algorithm chosen. */
#include <string.h>

#include "cuda_ops.cuh"
extern "C" {
#include "dist.h"
}

CudaContext cuda;

#define SCRATCH_BYTES ((size_t)4 << 20)
#define CUBLAS_WORKSPACE_BYTES ((size_t)32 << 20)   /* cuBLAS's recommendation for Hopper */

void *cuda_alloc(size_t bytes) {
    if (bytes == 0) return NULL;
    void *p = NULL;
    const cudaError_t status = cudaMalloc(&p, bytes);
    if (status != cudaSuccess)
        die("cuda: cannot allocate %zu bytes of device memory: %s", bytes,
            cudaGetErrorString(status));
    cudaCheck(cudaMemsetAsync(p, 0, bytes, cuda.stream));
    return p;
}

void cuda_release(void *p) {
    if (p) cudaCheck(cudaFree(p));
}

void cuda_to_device(void *dst, const void *src, size_t bytes) {
    if (bytes) cudaCheck(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cuda.stream));
}

void cuda_to_host(void *dst, const void *src, size_t bytes) {
    if (!bytes) return;
    cudaCheck(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, cuda.stream));
    cudaCheck(cudaStreamSynchronize(cuda.stream));
}

void cuda_copy(void *dst, const void *src, size_t bytes) {
    if (bytes) cudaCheck(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cuda.stream));
}

void cuda_synchronize(void) { cudaCheck(cudaStreamSynchronize(cuda.stream)); }

/* Pinned memory, so that cudaMemcpyAsync into it is truly asynchronous (from pageable
 * memory CUDA would stage the copy and wait). */
void *cuda_alloc_host(size_t bytes) {
    void *p = NULL;
    const cudaError_t status = cudaMallocHost(&p, bytes ? bytes : 1);
    if (status != cudaSuccess)
        die("cuda: cannot allocate %zu bytes of pinned host memory: %s", bytes,
            cudaGetErrorString(status));
    memset(p, 0, bytes ? bytes : 1);
    return p;
}

void cuda_release_host(void *p) {
    if (p) cudaCheck(cudaFreeHost(p));
}

void cuda_to_host_async(void *dst, const void *src, size_t bytes) {
    if (bytes) cudaCheck(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, cuda.stream));
    cudaCheck(cudaEventRecord(cuda.host_copies, cuda.stream));
}

void cuda_wait_host_copies(void) { cudaCheck(cudaEventSynchronize(cuda.host_copies)); }

/* CUDA graphs, behind DDPM_CUDA_GRAPHS=1 (read at each graph_begin). Never run on a GPU so
 * far: docs/GPU.md lists what must be checked. Thread-local capture mode: another thread's
 * unrelated CUDA calls do not invalidate the capture. */
void *cuda_graph_begin(void) {
    const char *flag = getenv("DDPM_CUDA_GRAPHS");
    if (!flag || strcmp(flag, "1") != 0) return NULL;
    cudaCheck(cudaStreamBeginCapture(cuda.stream, cudaStreamCaptureModeThreadLocal));
    return &cuda;   /* not a graph yet: only "capturing" */
}

void *cuda_graph_end(void) {
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    cudaCheck(cudaStreamEndCapture(cuda.stream, &graph));
    cudaCheck(cudaGraphInstantiate(&exec, graph, 0));
    cudaCheck(cudaGraphDestroy(graph));
    return (void *)exec;
}

void cuda_graph_launch(void *graph) {
    cudaCheck(cudaGraphLaunch((cudaGraphExec_t)graph, cuda.stream));
}

void cuda_graph_release(void *graph) {
    if (graph) cudaCheck(cudaGraphExecDestroy((cudaGraphExec_t)graph));
}

#define CUDA_TABLE_ENTRY(ret, op, params) .op = cuda_##op,
static const Backend table = {
    .name = "cuda",
    BACKEND_OPS(CUDA_TABLE_ENTRY)
};
#undef CUDA_TABLE_ENTRY

static int env_flag(const char *name) {
    const char *value = getenv(name);
    return value && strcmp(value, "1") == 0;
}

/* One GPU per process: under a launcher the local rank picks it, unless only one is
 * visible (srun --gpus-per-task and CUDA_VISIBLE_DEVICES leave each rank its own). */
static void select_device(int count) {
    DistEnv env;
    char err[256];
    if (dist_env_detect(&env, err, sizeof err) != 0) die("%s", err);
    if (count == 1 || strcmp(env.launcher, "none") == 0) return;
    if (env.local_rank >= count)
        die("cuda: local rank %d (%s) but %d GPUs are visible on this node", env.local_rank,
            env.launcher, count);
    cudaCheck(cudaSetDevice(env.local_rank));
}

static void context_init(int count) {
    cudaDeviceProp prop;
    int device;
    select_device(count);
    cudaCheck(cudaGetDevice(&device));
    cudaCheck(cudaGetDeviceProperties(&prop, device));
    cuda.tf32 = env_flag("DDPM_TF32");
    cudaCheck(cudaStreamCreate(&cuda.stream));
    cudaCheck(cudaEventCreateWithFlags(&cuda.host_copies, cudaEventDisableTiming));

    cublasCheck(cublasCreate(&cuda.cublas));
    cublasCheck(cublasSetStream(cuda.cublas, cuda.stream));
    /* after SetStream, which resets the workspace to cuBLAS's own pool */
    cudaCheck(cudaMalloc(&cuda.cublas_workspace, CUBLAS_WORKSPACE_BYTES));
    cublasCheck(cublasSetWorkspace(cuda.cublas, cuda.cublas_workspace, CUBLAS_WORKSPACE_BYTES));
    cublasCheck(cublasSetMathMode(cuda.cublas,
                                  cuda.tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
    cublasCheck(cublasSetAtomicsMode(cuda.cublas, CUBLAS_ATOMICS_NOT_ALLOWED));

    cudnnCheck(cudnnCreate(&cuda.cudnn));
    cudnnCheck(cudnnSetStream(cuda.cudnn, cuda.stream));

    cudaCheck(cudaMalloc(&cuda.scratch, SCRATCH_BYTES));
    cuda.scratch_doubles = SCRATCH_BYTES / sizeof(double);
    fprintf(stderr, "ddpm: cuda: %s (sm_%d%d, %d SMs, %.1f GiB), cuDNN %zu, %s\n", prop.name,
            prop.major, prop.minor, prop.multiProcessorCount,
            (double)prop.totalGlobalMem / (1 << 30), cudnnGetVersion(),
            cuda.tf32 ? "TF32 allowed (DDPM_TF32=1)" : "strict fp32");
}

extern "C" const Backend *backend_cuda(void) {
    static int state;   /* 0: not tried yet, 1: ready, -1: no usable device */
    if (state == 0) {
        int count = 0;
        if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
            (void)cudaGetLastError();   /* no driver or no device: not an error here */
            state = -1;
        } else {
            context_init(count);
            state = 1;
        }
    }
    return state > 0 ? &table : NULL;
}
