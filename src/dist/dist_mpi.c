/* The MPI transport (see dist.h): the CPU backend's gradient averages and statistics,
 * and rank 0's bytes for NCCL's bootstrap. Built when the Makefile finds mpicc
 * (-DDDPM_MPI); without it, dist_mpi_start says so. */
#include "dist.h"

#include <stdio.h>

#ifdef DDPM_MPI
#include <mpi.h>

#include "util.h"

static void mpi_check(int rc, const char *call) {
    if (rc == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    die("%s: %s", call, text);
}

/* Host memory: MPI_SUM in place, then the mean. Blocking; the watchdog times it. */
static void mpi_allreduce_mean(Dist *d, float *buf, size_t n) {
    dist_collective_begin(d, "gradient all-reduce (MPI)");
    mpi_check(MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD),
              "MPI_Allreduce");
    dist_collective_end(d);
    const float scale = 1.0f / (float)d->env.world_size;
    for (size_t i = 0; i < n; i++) buf[i] *= scale;
}

static void mpi_wait(Dist *d) { (void)d; }

static void mpi_allgather(Dist *d, float *buf, size_t per_rank) {
    dist_collective_begin(d, "statistics all-gather (MPI)");
    mpi_check(MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, (int)per_rank, MPI_FLOAT,
                            MPI_COMM_WORLD),
              "MPI_Allgather");
    dist_collective_end(d);
}

static void mpi_broadcast(Dist *d, void *bytes, size_t size) {
    dist_collective_begin(d, "broadcast (MPI)");
    mpi_check(MPI_Bcast(bytes, (int)size, MPI_BYTE, 0, MPI_COMM_WORLD), "MPI_Bcast");
    dist_collective_end(d);
}

static void mpi_finalize(Dist *d) {
    (void)d;
    MPI_Finalize();
}

int dist_mpi_start(Dist *d, char *err, size_t err_size) {
    int provided, rank, size;
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
        snprintf(err, err_size, "MPI_Init_thread failed");
        return -1;
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (rank != d->env.rank || size != d->env.world_size) {
        snprintf(err, err_size,
                 "MPI sees rank %d of %d, the %s environment says %d of %d (start the "
                 "CPU backend's ranks with mpirun)", rank, size, d->env.launcher, d->env.rank,
                 d->env.world_size);
        MPI_Finalize();
        return -1;
    }
    d->ops.allreduce_mean_start = mpi_allreduce_mean;
    d->ops.allreduce_wait = mpi_wait;
    d->ops.allgather = mpi_allgather;
    d->ops.broadcast_bytes = mpi_broadcast;
    d->ops.finalize = mpi_finalize;
    return 0;
}

#else

int dist_mpi_start(Dist *d, char *err, size_t err_size) {
    (void)d;
    snprintf(err, err_size, "this build has no MPI (install libopenmpi-dev and rebuild)");
    return -1;
}

#endif
