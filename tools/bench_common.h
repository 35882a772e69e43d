/* Shared by the benchmarks: argument parsing, random (never zero) data, medians. */
#ifndef DDPM_BENCH_COMMON_H
#define DDPM_BENCH_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "config.h"
#include "data.h"
#include "util.h"

typedef struct {
    Config cfg;
    const Backend *be;
    int warmup, iters;
    double guidance_scale;   /* bench_sample, class-conditional configs: --guidance-scale */
} BenchArgs;

/* --config F, --device cpu|cuda, --warmup N, --iters N, --guidance-scale S, then key=value
 * overrides. */
static inline BenchArgs bench_parse(int argc, char **argv) {
    BenchArgs a = {.warmup = 3, .iters = 10, .guidance_scale = 1.0};
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
        } else if (strcmp(argv[i], "--guidance-scale") == 0 && has_value) {
            a.guidance_scale = atof(argv[++i]);
        } else if (config_set(&a.cfg, argv[i], err, sizeof err) != 0) {
            die("%s", err);
        }
    }
    if (a.iters < 1) die("--iters must be at least 1");
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
