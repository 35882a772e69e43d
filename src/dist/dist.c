/* Data parallelism (see dist.h): rank discovery, start-up, and the gradient buckets. */
#include "dist.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* ---------------- rank discovery ---------------- */

typedef struct {
    const char *launcher;
    const char *rank, *size, *local_rank;   /* variable names; local_rank may be NULL */
} LauncherVars;

/* srun sets SLURM_STEP_NUM_TASKS for the tasks it starts; SLURM_NTASKS alone is also
 * set inside a batch script, where one process runs. */
static const LauncherVars LAUNCHERS[] = {
    {"torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK"},
    {"Open MPI", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"},
    {"MPICH", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"},
    {"Slurm", "SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID"},
};

static int env_int(const char *name, int *value, char *err, size_t err_size) {
    const char *text = getenv(name);
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < 0 || v > 1 << 24) {
        snprintf(err, err_size, "%s=\"%s\" is not a rank or a size", name, text);
        return -1;
    }
    *value = (int)v;
    return 0;
}

static int read_launcher(DistEnv *env, const LauncherVars *l, char *err, size_t err_size) {
    env->launcher = l->launcher;
    if (env_int(l->rank, &env->rank, err, err_size) ||
        env_int(l->size, &env->world_size, err, err_size))
        return -1;
    env->local_rank = 0;
    if (l->local_rank && getenv(l->local_rank) &&
        env_int(l->local_rank, &env->local_rank, err, err_size))
        return -1;
    if (env->world_size < 1 || env->rank >= env->world_size) {
        snprintf(err, err_size, "%s: %s=%d is not below %s=%d", l->launcher, l->rank, env->rank,
                 l->size, env->world_size);
        return -1;
    }
    return 0;
}

static int read_master(DistEnv *env, char *err, size_t err_size) {
    const char *addr = getenv("MASTER_ADDR");
    if (addr) snprintf(env->master_addr, sizeof env->master_addr, "%s", addr);
    if (getenv("MASTER_PORT") && env_int("MASTER_PORT", &env->master_port, err, err_size))
        return -1;
    if (env->master_port > 65535) {
        snprintf(err, err_size, "MASTER_PORT=%d is not a TCP port", env->master_port);
        return -1;
    }
    return 0;
}

int dist_env_detect(DistEnv *env, char *err, size_t err_size) {
    memset(env, 0, sizeof *env);
    env->world_size = 1;
    env->launcher = "none";
    for (size_t i = 0; i < sizeof LAUNCHERS / sizeof LAUNCHERS[0]; i++) {
        const LauncherVars *l = &LAUNCHERS[i];
        if (!getenv(l->rank) || !getenv(l->size)) continue;
        if (read_launcher(env, l, err, err_size) != 0) return -1;
        break;
    }
    return read_master(env, err, err_size);
}

/* ---------------- start-up ---------------- */

static void start_world(Dist *d) {
    char err[512];
    const int cuda = strcmp(d->be->name, "cuda") == 0;
    const int mpi_launched = strcmp(d->env.launcher, "Open MPI") == 0 ||
                             strcmp(d->env.launcher, "MPICH") == 0;
    /* MPI carries the CPU backend's collectives, and NCCL's bootstrap when present */
    if ((!cuda || mpi_launched) && dist_mpi_start(d, err, sizeof err) != 0) {
        if (!cuda)
            die("rank %d of %d (%s): the CPU backend averages gradients over MPI: %s",
                d->env.rank, d->env.world_size, d->env.launcher, err);
        memset(&d->ops, 0, sizeof d->ops);
    }
    if (dist_control_start(d, err, sizeof err) != 0)
        die("rank %d of %d (%s): %s", d->env.rank, d->env.world_size, d->env.launcher, err);
    if (cuda && dist_nccl_start(d, err, sizeof err) != 0)
        die("rank %d of %d (%s): %s", d->env.rank, d->env.world_size, d->env.launcher, err);
}

/* A launcher's world of one on a GPU still goes through NCCL, when built in: the same
 * code path as many ranks, at no cost worth measuring. */
static void start_world_of_one(Dist *d) {
    char err[512];
    if (strcmp(d->be->name, "cuda") != 0 || strcmp(d->env.launcher, "none") == 0) return;
    if (dist_nccl_start(d, err, sizeof err) != 0) {
        warn("a world of one without NCCL: %s", err);
        memset(&d->ops, 0, sizeof d->ops);
    }
}

Dist *dist_init(const DistEnv *env, const Backend *be, double timeout_s) {
    Dist *d = xcalloc(1, sizeof *d);
    d->env = *env;
    d->be = be;
    d->control_fd = -1;
    d->timeout_s = timeout_s;
    if (env->world_size > 1) start_world(d);
    else start_world_of_one(d);
    return d;
}

Dist *dist_start(const Backend *be, double timeout_s) {
    DistEnv env;
    char err[512];
    if (dist_env_detect(&env, err, sizeof err) != 0) die("%s", err);
    return dist_init(&env, be, timeout_s);
}

void dist_finalize(Dist *d) {
    if (!d) return;
    if (d->barrier_buf) d->be->release(d->barrier_buf);
    if (d->env.world_size > 1) dist_control_stop(d);
    if (d->ops.finalize) d->ops.finalize(d);
    free(d);
}

/* ---------------- gradient buckets ---------------- */

/* Buckets are cut from the top of the flat buffer, where backward finishes first. */
void dist_attach_grads(Dist *d, float *grads, size_t num_grads, double bucket_mb) {
    d->grads = grads;
    d->num_grads = num_grads;
    size_t floats = (size_t)(bucket_mb * (1 << 20) / sizeof(float));
    d->bucket_floats = floats > 0 ? floats : 1;
    d->pending_lo = num_grads;
}

static void start_bucket(Dist *d, size_t lo) {
    d->ops.allreduce_mean_start(d, d->grads + lo, d->pending_lo - lo);
    d->pending_lo = lo;
}

void dist_grads_ready(void *dist, size_t final_from) {
    Dist *d = dist;
    if (!d->ops.allreduce_mean_start) return;   /* one process, no transport */
    while (d->pending_lo > 0) {
        size_t lo = d->pending_lo > d->bucket_floats ? d->pending_lo - d->bucket_floats : 0;
        if (lo < final_from) break;
        start_bucket(d, lo);
    }
}

void dist_grads_finish(Dist *d) {
    if (d->ops.allreduce_mean_start) {
        dist_grads_ready(d, 0);
        d->ops.allreduce_wait(d);
    }
    d->pending_lo = d->num_grads;
}

void dist_allgather(Dist *d, float *buf, size_t per_rank) {
    if (d->ops.allgather) d->ops.allgather(d, buf, per_rank);
}

void dist_barrier(Dist *d) {
    if (!d->ops.allgather) return;
    if (!d->barrier_buf) {   /* once, outside any step loop */
        d->barrier_buf = d->be->alloc((size_t)d->env.world_size * sizeof(float));
        d->be->fill(d->barrier_buf, 0.0f, (size_t)d->env.world_size);
    }
    d->ops.allgather(d, d->barrier_buf, 1);
}
