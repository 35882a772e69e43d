/* Where a step's time goes, by category of op: the benchmarks' profile.
 *
 * A Profile attached to a network (Net.profile) makes net_forward and net_backward
 * synchronise the backend around every node and add its time to the node's category, so
 * a profiled step is slower than a timed one and is run apart from it. Convolutions are
 * split by direction: in a profiled backward each convolution first runs its weight
 * gradient alone (timed as backward weights), then its whole backward, whose extra time
 * is the backward data. `ops` counts the backend calls the nodes made (one per node; the
 * CUDA backend may launch several kernels for one call). */
#ifndef DDPM_PROFILE_H
#define DDPM_PROFILE_H

#include "backend.h"
#include "util.h"

typedef enum {
    PROF_CONV_FORWARD,
    PROF_CONV_BACKWARD_DATA,
    PROF_CONV_BACKWARD_WEIGHTS,
    PROF_NORM,          /* GroupNorm (with its fused SiLU) */
    PROF_GEMM,          /* linear layers and attention */
    PROF_ELEMENTWISE,   /* SiLU, adds, biases, dropout, concat, upsample, embeddings, pooling */
    PROF_CATEGORIES
} ProfileCategory;

typedef struct {
    const Backend *be;
    double ms[PROF_CATEGORIES];
    long ops;
} Profile;

static inline const char *profile_category_name(int c) {
    static const char *const names[PROF_CATEGORIES] = {
        "conv_forward", "conv_backward_data", "conv_backward_weights", "norm", "gemm",
        "elementwise"};
    return c >= 0 && c < PROF_CATEGORIES ? names[c] : "?";
}

/* The start of a timed span (0 without a profile): the backend is idle first. */
static inline double profile_begin(const Profile *p) {
    if (!p) return 0;
    p->be->synchronize();
    return now_seconds();
}

/* Waits for the span's work and adds its time to category c; returns its milliseconds. */
static inline double profile_end(Profile *p, int c, double start, int ops) {
    if (!p) return 0;
    p->be->synchronize();
    const double ms = (now_seconds() - start) * 1e3;
    p->ms[c] += ms;
    p->ops += ops;
    return ms;
}

#endif
