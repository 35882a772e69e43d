/* Shared by the benchmarks: argument parsing, random (never zero) data, percentiles, the
 * machine's SGEMM peak, and the JSON fields every line carries (commit, precision, p10/p50/
 * p90, the profile by category). */
#ifndef DDPM_BENCH_COMMON_H
#define DDPM_BENCH_COMMON_H

#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "config.h"
#include "data.h"
#include "profile.h"
#include "util.h"

typedef struct {
    Config cfg;
    const Backend *be;
    int warmup, iters;
    int profile_steps;       /* --profile N: steps of the profile by category (0: none) */
    int sgemm_n;             /* --sgemm-peak N: the CPU's SGEMM peak on N x N (0: not measured) */
    double guidance_scale;   /* bench_sample, class-conditional configs: --guidance-scale */
} BenchArgs;

/* --config F, --device cpu|cuda, --warmup N, --iters N, --profile N, --sgemm-peak N,
 * --guidance-scale S, then key=value overrides. */
static inline BenchArgs bench_parse(int argc, char **argv) {
    BenchArgs a = {.warmup = 3, .iters = 10, .profile_steps = 2, .sgemm_n = 2048,
                   .guidance_scale = 1.0};
    char err[1024];
    const char *device = "cpu";
    config_defaults(&a.cfg);
    for (int i = 1; i < argc; i++) {
        int has_value = i + 1 < argc;
        if (strcmp(argv[i], "--config") == 0 && has_value) {
            if (config_load_file(&a.cfg, argv[++i], err, sizeof err) != 0) die("%s", err);
        } else if (strcmp(argv[i], "--device") == 0 && has_value) {
            device = argv[++i];
        } else if (strcmp(argv[i], "--warmup") == 0 && has_value) {
            a.warmup = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--iters") == 0 && has_value) {
            a.iters = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--profile") == 0 && has_value) {
            a.profile_steps = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--sgemm-peak") == 0 && has_value) {
            a.sgemm_n = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--guidance-scale") == 0 && has_value) {
            a.guidance_scale = atof(argv[++i]);
        } else if (config_set(&a.cfg, argv[i], err, sizeof err) != 0) {
            die("%s", err);
        }
    }
    if (a.iters < 1) die("--iters must be at least 1");
    if (a.warmup < 0) die("--warmup must be at least 0");
    if (a.profile_steps < 0) die("--profile must be at least 0");
    if (a.sgemm_n < 0) die("--sgemm-peak must be at least 0");
    if (config_validate(&a.cfg, err, sizeof err) != 0) die("%s", err);
    a.be = strcmp(device, "cuda") == 0 ? backend_cuda() : backend_cpu();
    if (!a.be) die("--device %s: not available in this build or on this machine", device);
    return a;
}

static inline int bench_compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static inline double bench_median(double *ms, int n) {
    qsort(ms, (size_t)n, sizeof(double), bench_compare);
    return ms[n / 2];
}

#ifndef DDPM_COMMIT
#define DDPM_COMMIT "unknown"
#endif

typedef struct {
    double p10, p50, p90;
} BenchSpread;

/* Sorts ms; nearest-rank percentiles (the median of an even count is its upper middle). */
static inline BenchSpread bench_spread(double *ms, int n) {
    qsort(ms, (size_t)n, sizeof(double), bench_compare);
    int i10 = (int)(0.1 * (n - 1) + 0.5), i90 = (int)(0.9 * (n - 1) + 0.5);
    return (BenchSpread){ms[i10], ms[n / 2], ms[i90]};
}

/* What the run computes in: the CPU is strict fp32; CUDA is fp32 or, with DDPM_TF32=1,
 * TF32 in its convolutions and GEMMs. */
static inline const char *bench_precision(const BenchArgs *a) {
    const char *tf32 = getenv("DDPM_TF32");
    int cuda = strcmp(a->be->name, "cpu") != 0;
    return cuda && tf32 && strcmp(tf32, "1") == 0 ? "tf32" : "fp32";
}

/* The machine's GEMM peak as this build reaches it: the best of `reps` OpenBLAS SGEMMs of
 * n x n random matrices on all OpenMP threads, in GFLOP/s. */
static inline double bench_sgemm_peak_gflops(int n, int reps) {
    size_t count = (size_t)n * n;
    float *a = xmalloc(count * sizeof(float)), *b = xmalloc(count * sizeof(float));
    float *c = xmalloc(count * sizeof(float));
    RngKey key = {777, 1, 0, 0};
    for (size_t i = 0; i < count; i++) {
        a[i] = philox_uniform(key, 0, i) - 0.5f;
        b[i] = philox_uniform(key, 1, i) - 0.5f;
    }
    double best = 0;
    for (int r = 0; r <= reps; r++) {   /* the first is a warm-up */
        double start = now_seconds();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f,
                    c, n);
        double gflops = 2.0 * n * n * (double)n / (now_seconds() - start) / 1e9;
        if (r > 0 && gflops > best) best = gflops;
    }
    free(a), free(b), free(c);
    return best;
}

/* , "category_ms": {...}, "ops_per_step": N: a profile of `steps` steps, per step. */
static inline void bench_print_profile(const Profile *p, int steps, const char *extra_name,
                                       double extra_ms) {
    printf(", \"category_ms\": {");
    for (int c = 0; c < PROF_CATEGORIES; c++)
        printf("%s\"%s\": %.3f", c ? ", " : "", profile_category_name(c), p->ms[c] / steps);
    if (extra_name) printf(", \"%s\": %.3f", extra_name, extra_ms);
    printf("}, \"ops_per_step\": %ld", p->ops / steps);
}

/* Random uint8 images: benchmarks never run on zeros. */
static inline void bench_random_dataset(Dataset *d, const Config *c, int count) {
    *d = (Dataset){.count = count};
    d->height = d->width = c->image_size;
    d->channels = c->in_channels;
    size_t bytes = (size_t)count * c->image_size * c->image_size * c->in_channels;
    RngKey key = {12345, 99, 0, 0};
    if (c->dataset == DATASET_LATENTS) {   /* float data: unit normals, as scaled latents are */
        d->values = xmalloc(bytes * sizeof(float));
        for (size_t i = 0; i < bytes; i++) d->values[i] = philox_normal(key, 0, i);
        return;
    }
    d->images = xmalloc(bytes);
    for (size_t i = 0; i < bytes; i++) d->images[i] = (uint8_t)(philox_word(key, 0, i) >> 24);
}

#endif
