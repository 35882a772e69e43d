/* Builds without the CUDA backend: backend_cuda() reports that none is available, and
 * data parallelism has no NCCL. */
#ifndef DDPM_CUDA
#include <stddef.h>
#include <stdio.h>

#include "backend.h"
#include "dist.h"

const Backend *backend_cuda(void) { return NULL; }

int dist_nccl_start(Dist *d, char *err, size_t err_size) {
    (void)d;
    snprintf(err, err_size, "this build has no CUDA backend");
    return -1;
}
#endif
