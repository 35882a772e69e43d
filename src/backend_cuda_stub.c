/* Builds without the CUDA backend: backend_cuda() reports that none is available. */
#ifndef DDPM_CUDA
#include <stddef.h>
#include "backend.h"

const Backend *backend_cuda(void) { return NULL; }
#endif
