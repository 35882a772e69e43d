/* Reading reference tensors (the safetensors files under tests/ref) into plain arrays. */
#ifndef DDPM_REF_IO_H
#define DDPM_REF_IO_H

#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "safetensors.h"
#include "util.h"

/* Opens a reference file and returns the config in its metadata ("config") over the
 * defaults; dies naming the file on error. */
static inline Config ref_open(StFile *f, const char *path) {
    char err[1024];
    if (st_read(f, path, err, sizeof err) != 0) die("%s", err);
    Config cfg;
    config_defaults(&cfg);
    if (config_load_json(&cfg, st_meta(f, "config"), path, err, sizeof err) != 0) die("%s", err);
    return cfg;
}

static inline const StTensor *ref_tensor(const StFile *f, const char *name) {
    const StTensor *t = st_find(f, name);
    if (!t) die("%s: reference tensor '%s' missing (regenerate with tools/)", f->path, name);
    return t;
}

/* The tensor as doubles, whatever its stored dtype (F64, F32, I32, I64). */
static inline double *ref_doubles(const StFile *f, const char *name, size_t *count) {
    const StTensor *t = ref_tensor(f, name);
    size_t n = st_numel(t);
    double *out = xmalloc((n ? n : 1) * sizeof(double));
    for (size_t i = 0; i < n; i++) {
        const char *p = (const char *)t->data;
        if (t->dtype == ST_F64) { double v; memcpy(&v, p + 8 * i, 8); out[i] = v; }
        else if (t->dtype == ST_I64) { int64_t v; memcpy(&v, p + 8 * i, 8); out[i] = (double)v; }
        else if (t->dtype == ST_I32) { int32_t v; memcpy(&v, p + 4 * i, 4); out[i] = v; }
        else { float v; memcpy(&v, p + 4 * i, 4); out[i] = v; }
    }
    if (count) *count = n;
    return out;
}

static inline float *ref_floats(const StFile *f, const char *name, size_t *count) {
    size_t n;
    double *d = ref_doubles(f, name, &n);
    float *out = xmalloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) out[i] = (float)d[i];
    free(d);
    if (count) *count = n;
    return out;
}

/* max |a-b| / max(max |b|, floor) over doubles */
static inline double rel_error_d(const double *a, const double *b, size_t n, double floor) {
    double diff = 0, ref = floor;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(a[i] - b[i]);
        if (!(d <= diff)) diff = d;
        if (fabs(b[i]) > ref) ref = fabs(b[i]);
    }
    return diff / ref;
}

#endif
