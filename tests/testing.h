/* Minimal test harness: checks that count failures and a run summary line.
 * Each test binary ends with `return test_summary("name");`, which prints
 * "name: N passed, N failed, N skipped" and returns non-zero when anything failed.
 * A check that cannot run here (no GPU) is counted with SKIP, never as passed. */
#ifndef DDPM_TESTING_H
#define DDPM_TESTING_H

#include <math.h>
#include <stdio.h>
#include <stddef.h>

static int tests_passed, tests_failed, tests_skipped;

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

/* A check that cannot run here: counted, and said why, on stdout. */
#define SKIP(...)                                                               \
    do {                                                                        \
        tests_skipped++;                                                        \
        printf("SKIP: ");                                                       \
        printf(__VA_ARGS__);                                                    \
        putchar('\n');                                                          \
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

/* dir/name in a rotating static buffer (a few may be live at once). */
static inline const char *test_path(const char *dir, const char *name) {
    static char buffers[4][512];
    static int next;
    char *out = buffers[next++ % 4];
    snprintf(out, sizeof buffers[0], "%s/%s", dir, name);
    return out;
}

static inline int test_summary(const char *name) {
    printf("%s: %d passed, %d failed, %d skipped\n", name, tests_passed, tests_failed,
           tests_skipped);
    return tests_failed ? 1 : 0;
}

#endif
