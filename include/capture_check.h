/* The CPU "capture" check: whether a stretch of work could be captured as one CUDA graph.
 *
 * A graph can hold only work queued on the stream: no call that waits for the device
 * (synchronize, to_host, wait_host_copies), no allocation or release of backend or pinned
 * memory, and no algorithm search (conv2d_prepare). capture_check_backend wraps a backend
 * (the CPU one, so this runs anywhere): every op forwards to it, and between
 * capture_check_begin and capture_check_end each of those calls is counted and named, as
 * are the host allocations (xmalloc, xcalloc, which includes the CPU ops' scratch growth).
 * tests/test_capture.c holds the training step and a sampling step to it. */
#ifndef DDPM_CAPTURE_CHECK_H
#define DDPM_CAPTURE_CHECK_H

#include "backend.h"

typedef struct {
    int forbidden_calls;        /* ops a captured graph cannot contain */
    char first_forbidden[32];   /* the first such op's name, or "" */
    long host_allocations;      /* xmalloc/xcalloc calls */
} CaptureReport;

/* The checking table around inner (one per process: a second call must pass the same inner). */
const Backend *capture_check_backend(const Backend *inner);
/* Starts counting; dies when a region is already open. */
void capture_check_begin(void);
/* Stops counting and returns what the region did; each forbidden call was also printed to
 * stderr as it happened. */
CaptureReport capture_check_end(void);

#endif
