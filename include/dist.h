/* Data parallelism across processes: one process per GPU (or per CPU rank), started
 * by mpirun, torchrun or srun.
 *
 * - Rank discovery reads the launcher's environment (dist_env_detect).
 * - The collectives run on MPI for the CPU backend and on NCCL for the CUDA backend;
 *   a world of one needs neither.
 * - Gradients are averaged in buckets of the flat gradient buffer, each launched as
 *   soon as backward has finished writing it (Net.grads_ready), and waited for before
 *   the optimizer step.
 * - A control connection from every rank to rank 0 (dist_control.c) carries the NCCL
 *   bootstrap when there is no MPI, and notices a rank that dies: the others stop with
 *   a message naming it instead of waiting forever. */
#ifndef DDPM_DIST_H
#define DDPM_DIST_H

#include <stddef.h>

#include "backend.h"

typedef struct {
    int rank, world_size;
    int local_rank;                /* selects the GPU on its node */
    const char *launcher;          /* "torchrun", "Open MPI", "MPICH", "Slurm" or "none" */
    char master_addr[256];         /* MASTER_ADDR, or "" (under MPI, rank 0's host is sent) */
    int master_port;               /* MASTER_PORT, or 0 */
} DistEnv;

/* Fills env from the environment of the first launcher found (torchrun's RANK and
 * WORLD_SIZE, then OMPI_COMM_WORLD_*, PMI_*, SLURM_*), or a world of one. Returns -1
 * with err filled when the variables are inconsistent. */
int dist_env_detect(DistEnv *env, char *err, size_t err_size);

typedef struct Dist Dist;

/* The transport: what MPI and NCCL each implement. Buffers are backend memory. */
typedef struct {
    /* Starts averaging buf[0, n) over the ranks, in place; may return before it is done. */
    void (*allreduce_mean_start)(Dist *d, float *buf, size_t n);
    /* Waits for every started average (and fails loudly after the deadline). */
    void (*allreduce_wait)(Dist *d);
    /* buf holds world_size blocks of per_rank floats; fills every block from its rank. */
    void (*allgather)(Dist *d, float *buf, size_t per_rank);
    /* Sends rank 0's bytes to every rank (host memory). */
    void (*broadcast_bytes)(Dist *d, void *bytes, size_t size);
    void (*finalize)(Dist *d);
    /* Unblocks this rank's collectives before it exits on a failure (may be NULL). */
    void (*abort)(Dist *d);
} DistOps;

struct Dist {
    DistEnv env;
    const Backend *be;
    DistOps ops;
    void *impl;
    int control_fd;         /* the control connection (dist_control.c); -1 in a world of one */
    double timeout_s;       /* a collective that takes longer stops the run */
    /* gradient buckets, set by dist_attach_model */
    float *grads;
    size_t num_grads, bucket_floats;
    size_t pending_lo;      /* grads [pending_lo, num_grads) are started or being started */
    float *barrier_buf;     /* (world_size) backend, for dist_barrier */
};

/* Starts the world described by env on backend be: MPI or NCCL as the backend needs,
 * the control connection, and the GPU of env.local_rank. A world of one starts nothing.
 * Dies with a message naming the launcher and the problem when it cannot. */
Dist *dist_init(const DistEnv *env, const Backend *be, double timeout_s);
/* dist_env_detect, dying with its message on an error, then dist_init. */
Dist *dist_start(const Backend *be, double timeout_s);
void dist_finalize(Dist *d);

/* Averages the model's gradients in buckets of bucket_mb MiB during net_backward. */
void dist_attach_grads(Dist *d, float *grads, size_t num_grads, double bucket_mb);
/* The Net.grads_ready callback: starts every bucket that has become final. */
void dist_grads_ready(void *dist, size_t final_from);
/* Starts what is left and waits: the gradients are then the mean over the ranks. */
void dist_grads_finish(Dist *d);
/* The per-step statistics: buf holds world_size blocks of per_rank floats. */
void dist_allgather(Dist *d, float *buf, size_t per_rank);
/* Returns once every rank has called it. */
void dist_barrier(Dist *d);

/* The transports: each sets d->ops (and d->impl) and returns 0, or -1 with err filled,
 * also when it was not built in. NCCL takes its bootstrap from d->ops.broadcast_bytes
 * when MPI set it, else from the control connection. */
int dist_mpi_start(Dist *d, char *err, size_t err_size);
int dist_nccl_start(Dist *d, char *err, size_t err_size);

/* The control connection: rank 0 listens, the others connect; a thread on each rank
 * watches it and ends the process, naming the rank, when a peer goes away. */
int dist_control_start(Dist *d, char *err, size_t err_size);
void dist_control_stop(Dist *d);
/* Rank 0's bytes to every rank over the control connection (no MPI needed). */
void dist_control_broadcast(Dist *d, void *bytes, size_t size);
/* Brackets a collective for the watchdog: past timeout_s the process stops. */
void dist_collective_begin(Dist *d, const char *what);
void dist_collective_end(Dist *d);

#endif
