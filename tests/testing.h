/* Minimal test harness: checks that count failures and a run summary line.
 * Each test binary ends with `return test_summary("name");`, which prints
 * "name: N passed, N failed" and returns non-zero when anything failed. */
#ifndef DDPM_TESTING_H
#define DDPM_TESTING_H

#include <math.h>
#include <stdio.h>
#include <stddef.h>

static int tests_passed, tests_failed;

#define CHECK(cond, ...)                                                        \
    do {                                                                        \
        if (cond) {                                                             \
            tests_passed++;                                                     \
        } else {                                                                \
            tests_failed++;                                                     \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                \
            fprintf(stderr, __VA_ARGS__);                                       \
            fputc('\n', stderr);                                                \
        }                                                                       \
    } while (0)

/* max |a-b| / max(max|b|, floor): the per-tensor relative error used throughout. */
static inline double rel_error(const float *a, const float *b, size_t n, double floor) {
    double max_diff = 0, max_ref = floor;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= max_diff)) max_diff = d;   /* NaN propagates */
        if (fabs((double)b[i]) > max_ref) max_ref = fabs((double)b[i]);
    }
    return max_diff / max_ref;
}

/* Finite-difference check of one input's gradient.
 * The op under test is wrapped as forward(ctx, out), computing out (n_out) from
 * whatever buffers ctx holds, one of which is x (n_x). The loss is
 * L = sum_j weights[j] * out[j], accumulated in double; analytic[i] must be dL/dx[i]
 * as the op's backward computed it (with dy = weights). Up to max_checks indices,
 * spread over x, are probed with central differences of step h.
 * Returns the worst |fd - analytic| / (atol + |analytic|) over the probes (<= 1 passes). */
typedef void (*ForwardFn)(void *ctx, float *out);

static inline double loss_of(ForwardFn forward, void *ctx, float *out, const float *weights,
                             size_t n_out) {
    forward(ctx, out);
    double loss = 0;
    for (size_t j = 0; j < n_out; j++) loss += (double)weights[j] * (double)out[j];
    return loss;
}

static inline double gradcheck(ForwardFn forward, void *ctx, float *out, size_t n_out,
                               const float *weights, float *x, size_t n_x,
                               const float *analytic, int max_checks, float h, double atol) {
    double worst = 0;
    size_t stride = n_x > (size_t)max_checks ? n_x / (size_t)max_checks : 1;
    for (size_t i = (stride > 1 ? stride / 2 : 0); i < n_x; i += stride) {
        float saved = x[i];
        x[i] = saved + h;
        double up = loss_of(forward, ctx, out, weights, n_out);
        x[i] = saved - h;
        double down = loss_of(forward, ctx, out, weights, n_out);
        x[i] = saved;
        double fd = (up - down) / (2.0 * ((double)(saved + h) - (double)saved));
        double score = fabs(fd - analytic[i]) / (atol + fabs(analytic[i]));
        if (!(score <= worst)) worst = score;
    }
    return worst;
}

/* dir/name in a rotating static buffer (a few may be live at once). */
static inline const char *test_path(const char *dir, const char *name) {
    static char buffers[4][512];
    static int next;
    char *out = buffers[next++ % 4];
    snprintf(out, sizeof buffers[0], "%s/%s", dir, name);
    return out;
}

static inline int test_summary(const char *name) {
    printf("%s: %d passed, %d failed\n", name, tests_passed, tests_failed);
    return tests_failed ? 1 : 0;
}

#endif
