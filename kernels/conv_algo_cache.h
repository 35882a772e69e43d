/* The convolution plan cache of the CUDA backend, as plain C (header only, so that
 * tests/test_conv_algo_cache.c checks it on any machine, GPU or not).
 *
 * conv2d_prepare measures cuDNN's algorithms once per shape, at start-up, with n =
 * the largest batch, and records the choice here, keyed by every field of the
 * ConvShape that describes the convolution (n included); choices also go to a file,
 * so that later runs reuse them (see "the choices on disk"). A call with a smaller n
 * finds no entry of its own; it derives one from the prepared entry of the same
 * geometry (same algorithms, recorded in ConvShape.algo), whose workspace the caller
 * already sized; a direction whose algorithm needs more workspace at the smaller n
 * switches to another that fits.
 *
 * Asymmetric padding: cuDNN's convolution descriptor pads top and bottom (left and
 * right) by the same amount, but DDPM's downsampling conv pads only bottom and right.
 * Such a convolution runs on a copy of the input padded explicitly, (N, H + pad_top +
 * pad_bottom, W + pad_left + pad_right, C), kept at the start of the workspace, and
 * is described to cuDNN with padding 0; its input gradient is computed into the same
 * buffer and cropped back.
 *
 * Backward data as a forward convolution ("the transposed method"): with stride 1
 * and symmetric padding p <= K - 1, dx is the correlation of dy (N, OH, OW, OC) with
 * the weight transposed and rotated by 180 degrees, W' (C, KH, KW, OC), padded by
 * K - 1 - p. In strict fp32 cuDNN's own backward data can be far slower than its
 * forward for the same sizes, so both are measured and the faster is kept; W' is
 * written into the workspace before each use.
 *
 * The functions below give that geometry and the workspace layout:
 * [padded input, aligned][W', aligned][cuDNN workspace of the three directions, the
 * max]; each of the first two is present only when used. */
#ifndef DDPM_CONV_ALGO_CACHE_H
#define DDPM_CONV_ALGO_CACHE_H

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif
#include "backend.h"
#ifdef __cplusplus
}
#endif

enum {
    CONV_ALGO_CACHE_CAPACITY = 256,   /* distinct (shape, batch) pairs; a U-Net has ~30 shapes */
    CONV_WORKSPACE_ALIGN = 256,       /* bytes: cuDNN's preferred workspace alignment */
    CONV_FORWARD = 0, CONV_BACKWARD_DATA = 1, CONV_BACKWARD_FILTER = 2,   /* direction index */
    /* algo[CONV_BACKWARD_DATA] = CONV_BWD_DATA_TRANSPOSED + a forward algorithm: the
     * transposed method with that algorithm. Far above cuDNN's algorithm numbers, so
     * the choices files keep their format and an old line still means what it did. */
    CONV_BWD_DATA_TRANSPOSED = 1000,
};

/* Host and device: the CUDA kernel that writes W' and the CPU test share the index map. */
#ifdef __CUDACC__
#define CONV_HOST_DEVICE static inline __host__ __device__
#else
#define CONV_HOST_DEVICE static inline
#endif

/* Everything that defines the convolution; ints only, so memcmp compares keys. */
typedef struct {
    int n, h, w, c, oc, kh, kw, stride, pad_top, pad_left, pad_bottom, pad_right;
} ConvKey;

typedef struct {
    ConvKey key;
    int algo[3];              /* cuDNN algorithm per direction (CONV_FORWARD, ...); for
                                 backward data possibly CONV_BWD_DATA_TRANSPOSED + n */
    int math[3];              /* the cudnnMathType_t each direction runs with */
    size_t algo_bytes[3];     /* the cuDNN workspace each direction needs */
} ConvAlgoEntry;

typedef struct {
    ConvAlgoEntry entries[CONV_ALGO_CACHE_CAPACITY];
    int count;
} ConvAlgoCache;

static inline ConvKey conv_key(const ConvShape *s) {
    ConvKey k;
    memset(&k, 0, sizeof k);
    k.n = s->n;
    k.h = s->h;
    k.w = s->w;
    k.c = s->c;
    k.oc = s->oc;
    k.kh = s->kh;
    k.kw = s->kw;
    k.stride = s->stride;
    k.pad_top = s->pad_top;
    k.pad_left = s->pad_left;
    k.pad_bottom = s->pad_bottom;
    k.pad_right = s->pad_right;
    return k;
}

/* Same convolution, whatever the batch. */
static inline int conv_same_geometry(const ConvKey *a, const ConvKey *b) {
    ConvKey x = *a, y = *b;
    x.n = y.n = 0;
    return memcmp(&x, &y, sizeof x) == 0;
}

/* ---- explicit padding ---- */

static inline int conv_needs_explicit_padding(const ConvShape *s) {
    return s->pad_top != s->pad_bottom || s->pad_left != s->pad_right;
}

/* The input as cuDNN sees it: padded when the padding is explicit. */
static inline int conv_input_h(const ConvShape *s) {
    return conv_needs_explicit_padding(s) ? s->h + s->pad_top + s->pad_bottom : s->h;
}
static inline int conv_input_w(const ConvShape *s) {
    return conv_needs_explicit_padding(s) ? s->w + s->pad_left + s->pad_right : s->w;
}
/* The padding cuDNN applies, on both sides. */
static inline int conv_cudnn_pad_h(const ConvShape *s) {
    return conv_needs_explicit_padding(s) ? 0 : s->pad_top;
}
static inline int conv_cudnn_pad_w(const ConvShape *s) {
    return conv_needs_explicit_padding(s) ? 0 : s->pad_left;
}

static inline size_t conv_align(size_t bytes) {
    return (bytes + CONV_WORKSPACE_ALIGN - 1) / CONV_WORKSPACE_ALIGN * CONV_WORKSPACE_ALIGN;
}

/* Bytes at the start of the workspace for the padded input (0 when cuDNN pads). */
static inline size_t conv_padded_input_bytes(const ConvShape *s) {
    if (!conv_needs_explicit_padding(s)) return 0;
    return conv_align((size_t)s->n * conv_input_h(s) * conv_input_w(s) * s->c * sizeof(float));
}

/* ---- backward data as a forward convolution (the transposed method) ---- */

/* stride 1, symmetric padding no wider than the kernel less one: then every input
 * position's gradient is a full correlation window of dy padded by K - 1 - p. */
static inline int conv_transposed_applies(const ConvShape *s) {
    return s->stride == 1 && !conv_needs_explicit_padding(s) && s->pad_top <= s->kh - 1 &&
           s->pad_left <= s->kw - 1;
}

/* The forward convolution that computes dx: x' = dy (N, OH, OW, OC), w' = W'
 * (C, KH, KW, OC), padding K - 1 - p, y' = dx (N, H, W, C). Only where it applies. */
static inline ConvShape conv_transposed_shape(const ConvShape *s) {
    ConvShape t;
    memset(&t, 0, sizeof t);
    t.n = s->n;
    t.h = s->oh;
    t.w = s->ow;
    t.c = s->oc;
    t.oc = s->c;
    t.kh = s->kh;
    t.kw = s->kw;
    t.stride = 1;
    t.pad_top = t.pad_bottom = s->kh - 1 - s->pad_top;
    t.pad_left = t.pad_right = s->kw - 1 - s->pad_left;
    t.oh = s->h;   /* OH + 2 (K - 1 - p) - K + 1 = H, since OH = H + 2p - K + 1 */
    t.ow = s->w;
    return t;
}

/* Element i of W' (C, KH, KW, OC) is W[oc][KH-1-kh][KW-1-kw][c] of W (OC, KH, KW, C):
 * returns that element's index in W. */
CONV_HOST_DEVICE size_t conv_transposed_weight_source(size_t i, int c, int kh, int kw, int oc) {
    const size_t o = i % oc, x = i / oc % kw, y = i / oc / kw % kh, ci = i / oc / kw / kh;
    return (((size_t)o * kh + (kh - 1 - y)) * kw + (kw - 1 - x)) * c + ci;
}

static inline int conv_bwd_data_is_transposed(int algo) {
    return algo >= CONV_BWD_DATA_TRANSPOSED;
}

/* algo[CONV_BACKWARD_DATA] for the transposed method run with a forward algorithm. */
static inline int conv_bwd_data_transposed(int forward_algo) {
    return CONV_BWD_DATA_TRANSPOSED + forward_algo;
}

/* The cuDNN forward algorithm the transposed method runs with. */
static inline int conv_transposed_forward_algo(int algo) {
    return algo - CONV_BWD_DATA_TRANSPOSED;
}

/* Bytes of the workspace that hold W' (aligned). */
static inline size_t conv_transposed_weight_bytes(const ConvShape *s) {
    return conv_align((size_t)s->oc * s->kh * s->kw * s->c * sizeof(float));
}

/* ---- the workspace ---- */

/* What comes before cuDNN's share: the padded input, then W' when backward data uses
 * the transposed method. */
static inline size_t conv_entry_fixed_bytes(const ConvAlgoEntry *e, const ConvShape *s) {
    const size_t weight = conv_bwd_data_is_transposed(e->algo[CONV_BACKWARD_DATA])
                              ? conv_transposed_weight_bytes(s)
                              : 0;
    return conv_padded_input_bytes(s) + weight;
}

/* The workspace a shape needs: the fixed part, then the largest cuDNN workspace (the
 * directions run one after the other, so they share it). */
static inline size_t conv_entry_workspace_bytes(const ConvAlgoEntry *e, const ConvShape *s) {
    size_t most = 0;
    for (int d = 0; d < 3; d++) most = e->algo_bytes[d] > most ? e->algo_bytes[d] : most;
    return conv_entry_fixed_bytes(e, s) + most;
}

/* ---- lookup ---- */

static inline ConvAlgoEntry *conv_algo_cache_find_key(ConvAlgoCache *cache, const ConvKey *key) {
    for (int i = 0; i < cache->count; i++)
        if (memcmp(&cache->entries[i].key, key, sizeof *key) == 0) return &cache->entries[i];
    return NULL;
}

static inline ConvAlgoEntry *conv_algo_cache_find(ConvAlgoCache *cache, const ConvShape *s) {
    const ConvKey key = conv_key(s);
    return conv_algo_cache_find_key(cache, &key);
}

/* The prepared entry this shape's algorithms came from: same geometry, same
 * algorithms, any batch (the largest if several). NULL when none. */
static inline const ConvAlgoEntry *conv_algo_cache_find_prepared(const ConvAlgoCache *cache,
                                                                 const ConvShape *s) {
    const ConvKey key = conv_key(s);
    const ConvAlgoEntry *best = NULL;
    for (int i = 0; i < cache->count; i++) {
        const ConvAlgoEntry *e = &cache->entries[i];
        if (!conv_same_geometry(&e->key, &key)) continue;
        if (memcmp(e->algo, s->algo, sizeof e->algo) != 0) continue;
        if (!best || e->key.n > best->key.n) best = e;
    }
    return best;
}

/* A new entry for the key with nothing chosen yet; NULL when the cache is full. */
static inline ConvAlgoEntry *conv_algo_cache_add_key(ConvAlgoCache *cache, const ConvKey *key) {
    if (cache->count >= CONV_ALGO_CACHE_CAPACITY) return NULL;
    ConvAlgoEntry *e = &cache->entries[cache->count++];
    memset(e, 0, sizeof *e);
    e->key = *key;
    return e;
}

static inline ConvAlgoEntry *conv_algo_cache_add(ConvAlgoCache *cache, const ConvShape *s) {
    const ConvKey key = conv_key(s);
    return conv_algo_cache_add_key(cache, &key);
}

/* ---- the choices on disk ----
 * Find's timings vary from run to run, so two processes could pick different (each
 * deterministic) algorithms that round differently, and a resumed run would not
 * reproduce the straight one. The choices are therefore also kept in a text file (one
 * per GPU model, cuDNN version and math mode); a shape found there is not measured
 * again. A line: the 12 key fields, then algo[3] and math[3]. The transposed method is
 * written as its algo[1] encoding (CONV_BWD_DATA_TRANSPOSED + n), with the math type of
 * that forward algorithm in math[1]. The version is part of the file's name: files
 * of version 1 hold choices made without the transposed method, which must not be
 * reused (they would keep a slow backward data), so they are not read. */

enum { CONV_CHOICES_VERSION = 2 };

static inline void conv_algo_line_format(char *line, size_t size, const ConvAlgoEntry *e) {
    const ConvKey *k = &e->key;
    snprintf(line, size, "%d %d %d %d %d %d %d %d %d %d %d %d  %d %d %d  %d %d %d\n", k->n, k->h,
             k->w, k->c, k->oc, k->kh, k->kw, k->stride, k->pad_top, k->pad_left, k->pad_bottom,
             k->pad_right, e->algo[0], e->algo[1], e->algo[2], e->math[0], e->math[1], e->math[2]);
}

/* 1 and the entry (workspace sizes 0) when the line is one conv_algo_line_format wrote. */
static inline int conv_algo_line_parse(const char *line, ConvAlgoEntry *e) {
    memset(e, 0, sizeof *e);
    ConvKey *k = &e->key;
    int end = 0;
    int fields = sscanf(line, "%d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %n", &k->n,
                        &k->h, &k->w, &k->c, &k->oc, &k->kh, &k->kw, &k->stride, &k->pad_top,
                        &k->pad_left, &k->pad_bottom, &k->pad_right, &e->algo[0], &e->algo[1],
                        &e->algo[2], &e->math[0], &e->math[1], &e->math[2], &end);
    return fields == 18 && line[end] == '\0';
}

/* Adds the file's entries to the cache (the first line of a key wins; lines that do
 * not parse are skipped). Returns how many were added, -1 when it cannot be read. */
static inline int conv_algo_cache_load(ConvAlgoCache *cache, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[256];
    int added = 0;
    ConvAlgoEntry parsed, *e;
    while (fgets(line, sizeof line, f)) {
        if (!conv_algo_line_parse(line, &parsed) || conv_algo_cache_find_key(cache, &parsed.key))
            continue;
        if (!(e = conv_algo_cache_add_key(cache, &parsed.key))) break;
        *e = parsed;
        added++;
    }
    fclose(f);
    return added;
}

/* Appends one entry's line to the file; 0, or -1 when it cannot be written. */
static inline int conv_algo_cache_append(const char *path, const ConvAlgoEntry *e) {
    char line[256];
    conv_algo_line_format(line, sizeof line, e);
    FILE *f = fopen(path, "a");
    if (!f) return -1;
    const int written = fputs(line, f) >= 0;
    return fclose(f) == 0 && written ? 0 : -1;
}

#endif
