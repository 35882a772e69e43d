/* The NCCL transport of data parallelism (see include/dist.h).
 *
 * Gradient buckets are averaged (ncclAvg) in place on a stream of their own: each
 * bucket waits, through an event, for the backward work queued before it, so its
 * all-reduce runs while the compute stream goes on with the layers below. The wait
 * at the end joins the two streams and polls on the host, with ncclCommGetAsyncError
 * and the run's deadline, instead of blocking in the driver: a failed peer ends the
 * run with a message (and ncclCommAbort) rather than a hang.
 *
 * The unique id goes from rank 0 over MPI when the run has it, else over the control
 * connection (dist_control.c). Built when the Makefile finds nccl.h (-DDDPM_NCCL). */
#include <unistd.h>

#include "cuda_common.cuh"

extern "C" {
#include "dist.h"
}

#ifdef DDPM_NCCL
#include <nccl.h>

static void nccl_check(ncclResult_t status, const char *call, const char *file, int line) {
    if (status == ncclSuccess) return;
    fprintf(stderr, "%s:%d: NCCL error %s: %s\n    in %s\n", file, line,
            ncclGetErrorString(status), ncclGetLastError(NULL), call);
    exit(1);
}
#define ncclCheck(call) nccl_check((call), #call, __FILE__, __LINE__)

typedef struct {
    ncclComm_t comm;
    cudaStream_t stream;          /* the all-reduces */
    cudaEvent_t backward_done;    /* recorded on the compute stream before each bucket */
    cudaEvent_t reduced;          /* recorded on the all-reduce stream by the wait */
    cudaEvent_t gathered;         /* recorded on the compute stream after an all-gather */
    int pending;                  /* buckets started since the last wait */
    void (*finalize_before)(Dist *d);   /* MPI's, when MPI carried the bootstrap */
} Nccl;

static Nccl *nccl_of(Dist *d) { return (Nccl *)d->impl; }

/* Waits for event on the host, watching NCCL's asynchronous errors and the deadline. */
static void wait_polling(Dist *d, cudaEvent_t event, const char *what) {
    Nccl *n = nccl_of(d);
    dist_collective_begin(d, what);
    for (;;) {
        cudaError_t status = cudaEventQuery(event);
        if (status == cudaSuccess) break;
        if (status != cudaErrorNotReady) cudaCheck(status);
        ncclResult_t async = ncclSuccess;
        ncclCheck(ncclCommGetAsyncError(n->comm, &async));
        if (async != ncclSuccess && async != ncclInProgress) {
            ncclCommAbort(n->comm);
            die("rank %d: NCCL failed during %s: %s", d->env.rank, what,
                ncclGetErrorString(async));
        }
        usleep(20);
    }
    dist_collective_end(d);
}

static void nccl_allreduce_mean_start(Dist *d, float *buf, size_t count) {
    Nccl *n = nccl_of(d);
    cudaCheck(cudaEventRecord(n->backward_done, cuda.stream));
    cudaCheck(cudaStreamWaitEvent(n->stream, n->backward_done, 0));
    ncclCheck(ncclAllReduce(buf, buf, count, ncclFloat, ncclAvg, n->comm, n->stream));
    n->pending = 1;
}

static void nccl_allreduce_wait(Dist *d) {
    Nccl *n = nccl_of(d);
    if (!n->pending) return;
    cudaCheck(cudaEventRecord(n->reduced, n->stream));
    cudaCheck(cudaStreamWaitEvent(cuda.stream, n->reduced, 0));
    wait_polling(d, n->reduced, "gradient all-reduce (NCCL)");
    n->pending = 0;
}

/* In place on the compute stream, after the loss kernels that filled this rank's block. */
static void nccl_allgather(Dist *d, float *buf, size_t per_rank) {
    Nccl *n = nccl_of(d);
    ncclCheck(ncclAllGather(buf + (size_t)d->env.rank * per_rank, buf, per_rank, ncclFloat,
                            n->comm, cuda.stream));
    cudaCheck(cudaEventRecord(n->gathered, cuda.stream));
    wait_polling(d, n->gathered, "statistics all-gather (NCCL)");
}

static void nccl_abort(Dist *d) {
    if (d->impl) ncclCommAbort(nccl_of(d)->comm);
}

static void nccl_finalize(Dist *d) {
    Nccl *n = nccl_of(d);
    ncclCheck(ncclCommDestroy(n->comm));
    cudaCheck(cudaEventDestroy(n->backward_done));
    cudaCheck(cudaEventDestroy(n->reduced));
    cudaCheck(cudaEventDestroy(n->gathered));
    cudaCheck(cudaStreamDestroy(n->stream));
    void (*finalize_before)(Dist *) = n->finalize_before;
    free(n);
    d->impl = NULL;
    if (finalize_before) finalize_before(d);
}

extern "C" int dist_nccl_start(Dist *d, char *err, size_t err_size) {
    ncclUniqueId id;
    if (d->env.rank == 0) ncclCheck(ncclGetUniqueId(&id));
    if (d->ops.broadcast_bytes) d->ops.broadcast_bytes(d, &id, sizeof id);
    else dist_control_broadcast(d, &id, sizeof id);

    Nccl *n = (Nccl *)xcalloc(1, sizeof *n);
    n->finalize_before = d->ops.finalize;
    d->impl = n;
    const unsigned int flags = cudaEventDisableTiming;
    cudaCheck(cudaStreamCreateWithFlags(&n->stream, cudaStreamNonBlocking));
    cudaCheck(cudaEventCreateWithFlags(&n->backward_done, flags));
    cudaCheck(cudaEventCreateWithFlags(&n->reduced, flags));
    cudaCheck(cudaEventCreateWithFlags(&n->gathered, flags));
    dist_collective_begin(d, "NCCL start-up");
    ncclResult_t status = ncclCommInitRank(&n->comm, d->env.world_size, id, d->env.rank);
    dist_collective_end(d);
    if (status != ncclSuccess) {
        snprintf(err, err_size, "ncclCommInitRank: %s", ncclGetErrorString(status));
        return -1;
    }
    d->ops.allreduce_mean_start = nccl_allreduce_mean_start;
    d->ops.allreduce_wait = nccl_allreduce_wait;
    d->ops.allgather = nccl_allgather;
    d->ops.finalize = nccl_finalize;
    d->ops.abort = nccl_abort;
    int version = 0;
    ncclGetVersion(&version);
    if (d->env.rank == 0)
        fprintf(stderr, "ddpm: NCCL %d.%d.%d, %d ranks\n", version / 10000, version / 100 % 100,
                version % 100, d->env.world_size);
    return 0;
}

#else

extern "C" int dist_nccl_start(Dist *d, char *err, size_t err_size) {
    (void)d;
    snprintf(err, err_size, "this build has no NCCL: data parallelism on GPUs needs it (set "
             "NCCL_HOME and rebuild)");
    return -1;
}

#endif
