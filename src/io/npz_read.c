/* Reading sample archives (npz.h) with libzip and a parser of the .npy header. */
#include "npz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zip.h>

#include "util.h"

enum { MAX_DIMS = 8 };

typedef struct {
    char descr[8];
    int ndim;
    long long shape[MAX_DIMS];
    const unsigned char *data;
    size_t data_size;
} NpyArray;

/* The whole member `name`, or NULL when absent (*missing = 1) or unreadable. */
static unsigned char *read_member(zip_t *zip, const char *name, size_t *size, int *missing) {
    zip_stat_t st;
    *missing = 0;
    if (zip_stat(zip, name, 0, &st) != 0 || !(st.valid & ZIP_STAT_SIZE)) {
        *missing = 1;
        return NULL;
    }
    zip_file_t *f = zip_fopen(zip, name, 0);
    if (!f) return NULL;
    unsigned char *buf = xmalloc(st.size ? st.size : 1);
    zip_int64_t got = zip_fread(f, buf, st.size);
    zip_fclose(f);
    if (got < 0 || (zip_uint64_t)got != st.size) {
        free(buf);
        return NULL;
    }
    *size = st.size;
    return buf;
}

/* The .npy header: magic, version, a Python dict literal with descr, fortran_order, shape. */
static int parse_npy(const unsigned char *buf, size_t size, NpyArray *a, const char **why) {
    if (size < 10 || memcmp(buf, "\x93NUMPY", 6) != 0) return *why = "not a .npy array", -1;
    size_t header_len, start;
    if (buf[6] == 1) header_len = buf[8] | (size_t)buf[9] << 8, start = 10;
    else if (size >= 12) header_len = buf[8] | (size_t)buf[9] << 8 | (size_t)buf[10] << 16 |
                                      (size_t)buf[11] << 24, start = 12;
    else return *why = "a truncated .npy header", -1;
    if (start + header_len > size) return *why = "a truncated .npy header", -1;
    char *header = xmalloc(header_len + 1);
    memcpy(header, buf + start, header_len);
    header[header_len] = 0;
    const char *descr = strstr(header, "'descr':"), *order = strstr(header, "'fortran_order':"),
               *shape = strstr(header, "'shape':");
    int ok = descr && order && shape && sscanf(descr, "'descr': '%7[^']'", a->descr) == 1 &&
             strncmp(order + 16, " False", 6) == 0;
    a->ndim = 0;
    const char *p = shape ? strchr(shape, '(') : NULL;
    for (p = p ? p + 1 : NULL; ok && p && *p && *p != ')';) {
        char *end;
        long long v = strtoll(p, &end, 10);
        if (end == p) break;
        if (a->ndim == MAX_DIMS || v < 0) ok = 0;
        else a->shape[a->ndim++] = v;
        p = end;
        while (*p == ',' || *p == ' ') p++;
    }
    free(header);
    if (!ok) return *why = "a .npy header it cannot read (or Fortran order)", -1;
    a->data = buf + start + header_len;
    a->data_size = size - start - header_len;
    return 0;
}

static size_t numel(const NpyArray *a) {
    size_t n = 1;
    for (int i = 0; i < a->ndim; i++) n *= (size_t)a->shape[i];
    return n;
}

static int read_images(const char *path, const NpyArray *a, NpzSamples *out, char *err,
                       size_t err_size) {
    if (strcmp(a->descr, "|u1") != 0 || a->ndim != 4)
        return set_error(err, err_size, "%s: arr_0 must be uint8 (N, H, W, C), not '%s' with %d dims",
                    path, a->descr, a->ndim);
    for (int i = 0; i < 4; i++)
        if (a->shape[i] < 1 || a->shape[i] > 1 << 24)
            return set_error(err, err_size, "%s: arr_0 has an empty or huge dimension", path);
    if (a->data_size != numel(a))
        return set_error(err, err_size, "%s: arr_0 holds %zu bytes, its shape says %zu", path,
                    a->data_size, numel(a));
    out->n = (int)a->shape[0], out->h = (int)a->shape[1], out->w = (int)a->shape[2];
    out->c = (int)a->shape[3];
    out->images = xmalloc(a->data_size);
    memcpy(out->images, a->data, a->data_size);
    return 0;
}

static int read_labels(const char *path, const NpyArray *a, NpzSamples *out, char *err,
                       size_t err_size) {
    int wide = strcmp(a->descr, "<i8") == 0;
    if ((!wide && strcmp(a->descr, "<i4") != 0) || a->ndim != 1)
        return set_error(err, err_size, "%s: arr_1 (labels) must be int64 or int32 of shape (N), "
                    "not '%s' with %d dims", path, a->descr, a->ndim);
    if (a->shape[0] != out->n)
        return set_error(err, err_size, "%s: arr_1 has %lld labels for %d images", path, a->shape[0],
                    out->n);
    if (a->data_size != (size_t)out->n * (wide ? 8 : 4))
        return set_error(err, err_size, "%s: arr_1 is truncated", path);
    out->labels = xmalloc((size_t)out->n * sizeof(int32_t));
    for (int i = 0; i < out->n; i++) {
        long long v;
        if (wide) {
            int64_t x;
            memcpy(&x, a->data + (size_t)i * 8, 8);
            v = x;
        } else {
            int32_t x;
            memcpy(&x, a->data + (size_t)i * 4, 4);
            v = x;
        }
        if (v < 0 || v > INT32_MAX)
            return set_error(err, err_size, "%s: label %lld of sample %d is negative or too large",
                        path, v, i);
        out->labels[i] = (int32_t)v;
    }
    return 0;
}

int npz_read_samples(const char *path, NpzSamples *out, char *err, size_t err_size) {
    memset(out, 0, sizeof *out);
    int code;
    zip_t *zip = zip_open(path, ZIP_RDONLY, &code);
    if (!zip) return set_error(err, err_size, "%s: cannot open as a .npz (zip) archive", path);
    size_t size = 0;
    int missing, rc = 0;
    const char *why = NULL;
    NpyArray a;
    unsigned char *images = read_member(zip, "arr_0.npy", &size, &missing);
    if (!images) rc = set_error(err, err_size, "%s: %s", path, missing ? "has no arr_0" : "arr_0 is unreadable");
    else if (parse_npy(images, size, &a, &why) != 0) rc = set_error(err, err_size, "%s: arr_0: %s", path, why);
    else rc = read_images(path, &a, out, err, err_size);
    unsigned char *labels = rc == 0 ? read_member(zip, "arr_1.npy", &size, &missing) : NULL;
    if (rc == 0 && !labels && !missing) rc = set_error(err, err_size, "%s: arr_1 is unreadable", path);
    else if (labels && parse_npy(labels, size, &a, &why) != 0)
        rc = set_error(err, err_size, "%s: arr_1: %s", path, why);
    else if (labels) rc = read_labels(path, &a, out, err, err_size);
    free(images);
    free(labels);
    zip_discard(zip);
    if (rc != 0) npz_samples_free(out);
    return rc;
}

void npz_samples_free(NpzSamples *s) {
    free(s->images);
    free(s->labels);
    memset(s, 0, sizeof *s);
}
