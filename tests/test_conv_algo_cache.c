/* The CUDA backend's convolution plan cache, explicit-padding geometry and the
 * transposed backward-data method's geometry and weight map (kernels/conv_algo_cache.h):
 * plain host code, checked on any machine. */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <unistd.h>

#include "../kernels/conv_algo_cache.h"
#include "testing.h"

static ConvShape shape(int n, int h, int c, int oc, int k, int stride, int pad_lo, int pad_hi) {
    ConvShape s = {.n = n, .h = h, .w = h, .c = c, .oc = oc, .kh = k, .kw = k, .stride = stride,
                   .pad_top = pad_lo, .pad_left = pad_lo, .pad_bottom = pad_hi,
                   .pad_right = pad_hi};
    conv_shape_finish(&s);
    return s;
}

/* What cuDNN computes from the geometry we describe to it must be the convolution the
 * ConvShape asks for: the same output size, and window o starting at the same input
 * row, o*stride - pad_top, in the original image's coordinates. */
static void check_geometry(const char *name, ConvShape s) {
    int cudnn_oh = (conv_input_h(&s) + 2 * conv_cudnn_pad_h(&s) - s.kh) / s.stride + 1;
    int cudnn_ow = (conv_input_w(&s) + 2 * conv_cudnn_pad_w(&s) - s.kw) / s.stride + 1;
    CHECK(cudnn_oh == s.oh && cudnn_ow == s.ow, "%s: cuDNN output %dx%d, expected %dx%d", name,
          cudnn_oh, cudnn_ow, s.oh, s.ow);
    /* explicit padding shifts the image down by pad_top inside the buffer */
    int shift = conv_needs_explicit_padding(&s) ? s.pad_top : 0;
    for (int o = 0; o < s.oh; o++) {
        int cudnn_first = o * s.stride - conv_cudnn_pad_h(&s) - shift;
        int wanted_first = o * s.stride - s.pad_top;
        if (cudnn_first != wanted_first) {
            CHECK(0, "%s: window %d starts at row %d, expected %d", name, o, cudnn_first,
                  wanted_first);
            return;
        }
    }
    CHECK(1, "%s", name);
}

static void test_padding_geometry(void) {
    ConvShape down = shape(4, 32, 64, 64, 3, 2, 0, 1);   /* DDPM downsample */
    CHECK(down.oh == 16 && down.ow == 16, "downsample output %dx%d", down.oh, down.ow);
    CHECK(conv_needs_explicit_padding(&down), "bottom/right-only padding must be explicit");
    CHECK(conv_input_h(&down) == 33 && conv_input_w(&down) == 33, "padded input %dx%d",
          conv_input_h(&down), conv_input_w(&down));
    CHECK(conv_cudnn_pad_h(&down) == 0 && conv_cudnn_pad_w(&down) == 0, "cuDNN pads nothing");
    size_t padded = (size_t)4 * 33 * 33 * 64 * sizeof(float);
    CHECK(conv_padded_input_bytes(&down) >= padded &&
              conv_padded_input_bytes(&down) < padded + CONV_WORKSPACE_ALIGN &&
              conv_padded_input_bytes(&down) % CONV_WORKSPACE_ALIGN == 0,
          "padded input bytes %zu for %zu", conv_padded_input_bytes(&down), padded);
    check_geometry("downsample 32", down);
    check_geometry("downsample 16", shape(2, 16, 8, 8, 3, 2, 0, 1));
    check_geometry("downsample odd 15", shape(2, 15, 8, 8, 3, 2, 0, 1));
    check_geometry("top-heavy padding", shape(2, 9, 4, 4, 3, 1, 2, 0));

    ConvShape same = shape(4, 32, 64, 128, 3, 1, 1, 1);
    CHECK(!conv_needs_explicit_padding(&same), "symmetric padding stays with cuDNN");
    CHECK(conv_input_h(&same) == 32 && conv_cudnn_pad_h(&same) == 1, "symmetric geometry");
    CHECK(conv_padded_input_bytes(&same) == 0, "no padded buffer for symmetric padding");
    check_geometry("3x3 same", same);
    check_geometry("1x1", shape(4, 32, 64, 32, 1, 1, 0, 0));
    check_geometry("strided symmetric", shape(2, 17, 4, 4, 3, 2, 1, 1));
}

static void test_workspace_size(void) {
    ConvAlgoEntry e = {.algo_bytes = {100, 5000, 300}};
    ConvShape same = shape(2, 8, 4, 4, 3, 1, 1, 1);
    CHECK(conv_entry_workspace_bytes(&e, &same) == 5000, "max of the three directions: %zu",
          conv_entry_workspace_bytes(&e, &same));
    ConvShape down = shape(2, 8, 4, 4, 3, 2, 0, 1);
    size_t pad = conv_padded_input_bytes(&down);
    CHECK(pad == conv_align((size_t)2 * 9 * 9 * 4 * sizeof(float)), "padded share %zu", pad);
    CHECK(conv_entry_workspace_bytes(&e, &down) == pad + 5000, "padded input + max: %zu",
          conv_entry_workspace_bytes(&e, &down));
    ConvAlgoEntry none = {.algo_bytes = {0, 0, 0}};
    CHECK(conv_entry_workspace_bytes(&none, &same) == 0, "no workspace at all");
    CHECK(conv_align(0) == 0 && conv_align(1) == 256 && conv_align(256) == 256 &&
              conv_align(257) == 512,
          "alignment to 256 bytes");
}

static void test_lookup(void) {
    ConvAlgoCache *cache = calloc(1, sizeof *cache);
    ConvShape s = shape(128, 32, 128, 128, 3, 1, 1, 1);
    CHECK(conv_algo_cache_find(cache, &s) == NULL, "empty cache finds nothing");
    ConvAlgoEntry *e = conv_algo_cache_add(cache, &s);
    CHECK(e && cache->count == 1, "added");
    e->algo[CONV_FORWARD] = 1;
    e->algo[CONV_BACKWARD_DATA] = 1;
    e->algo[CONV_BACKWARD_FILTER] = 3;
    CHECK(conv_algo_cache_find(cache, &s) == e, "found by the same shape");

    ConvShape noise = s;   /* what conv2d_prepare writes is not part of the key */
    noise.workspace_bytes = 12345;
    noise.algo[0] = 7;
    CHECK(conv_algo_cache_find(cache, &noise) == e, "workspace and algo are not in the key");

    const size_t fields[] = {
        offsetof(ConvShape, n),       offsetof(ConvShape, h),        offsetof(ConvShape, w),
        offsetof(ConvShape, c),       offsetof(ConvShape, oc),       offsetof(ConvShape, kh),
        offsetof(ConvShape, kw),      offsetof(ConvShape, stride),   offsetof(ConvShape, pad_top),
        offsetof(ConvShape, pad_left), offsetof(ConvShape, pad_bottom),
        offsetof(ConvShape, pad_right)};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        ConvShape other = s;
        *(int *)((char *)&other + fields[i]) += 1;
        CHECK(conv_algo_cache_find(cache, &other) == NULL, "key field %zu distinguishes", i);
    }

    /* a smaller batch at run time derives from the prepared entry with its algorithms */
    ConvShape run = s;
    run.n = 16;
    for (int d = 0; d < 3; d++) run.algo[d] = e->algo[d];
    CHECK(conv_algo_cache_find(cache, &run) == NULL, "no entry of its own yet");
    CHECK(conv_algo_cache_find_prepared(cache, &run) == e, "the prepared entry is found");
    run.algo[CONV_BACKWARD_FILTER] = 0;
    CHECK(conv_algo_cache_find_prepared(cache, &run) == NULL, "other algorithms: no parent");
    run.algo[CONV_BACKWARD_FILTER] = 3;
    ConvShape other_geometry = run;
    other_geometry.oc = 64;
    CHECK(conv_algo_cache_find_prepared(cache, &other_geometry) == NULL,
          "other geometry: no parent");

    ConvShape big = s;
    big.n = 256;
    ConvAlgoEntry *e_big = conv_algo_cache_add(cache, &big);
    for (int d = 0; d < 3; d++) e_big->algo[d] = e->algo[d];
    CHECK(conv_algo_cache_find_prepared(cache, &run) == e_big, "the largest prepared batch");
    CHECK(conv_algo_cache_find(cache, &s) == e && conv_algo_cache_find(cache, &big) == e_big,
          "both batches keep their entries");

    for (int i = cache->count; i < CONV_ALGO_CACHE_CAPACITY; i++) {
        ConvShape filler = s;
        filler.oc = 1000 + i;
        if (!conv_algo_cache_add(cache, &filler)) break;
    }
    CHECK(cache->count == CONV_ALGO_CACHE_CAPACITY, "filled to %d", cache->count);
    ConvShape one_more = s;
    one_more.oc = 7;
    CHECK(conv_algo_cache_add(cache, &one_more) == NULL, "a full cache refuses");
    CHECK(conv_algo_cache_find(cache, &big) == e_big, "entries survive filling up");
    free(cache);
}

/* The choices file: a line round-trips, bad lines are skipped, the first line of a
 * key wins, appends accumulate, and a missing file reads as -1. */
static void test_choices_file(void) {
    ConvAlgoEntry e = {.algo = {1, 0, 3}, .math = {3, 3, 3}, .algo_bytes = {99, 98, 97}};
    ConvShape down = shape(128, 32, 128, 128, 3, 2, 0, 1);
    e.key = conv_key(&down);
    char line[256];
    conv_algo_line_format(line, sizeof line, &e);
    ConvAlgoEntry back;
    CHECK(conv_algo_line_parse(line, &back), "a formatted line parses: %s", line);
    CHECK(memcmp(&back.key, &e.key, sizeof e.key) == 0 &&
              memcmp(back.algo, e.algo, sizeof e.algo) == 0 &&
              memcmp(back.math, e.math, sizeof e.math) == 0 && back.algo_bytes[0] == 0,
          "round trip (workspace sizes are not kept)");
    CHECK(!conv_algo_line_parse("1 2 3\n", &back), "a short line is rejected");
    CHECK(!conv_algo_line_parse("1 2 3 4 5 6 7 8 9 10 11 12 1 1 1 3 3 3 junk\n", &back),
          "trailing junk is rejected");

    char path[] = "/tmp/test_conv_algo_cache_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "temporary file");
    if (fd < 0) return;
    close(fd);
    ConvAlgoEntry other = e;
    other.key.n = 16;
    other.algo[2] = 1;
    ConvAlgoEntry duplicate = e;
    duplicate.algo[0] = 6;
    CHECK(conv_algo_cache_append(path, &e) == 0 && conv_algo_cache_append(path, &other) == 0 &&
              conv_algo_cache_append(path, &duplicate) == 0,
          "appends");
    FILE *f = fopen(path, "a");
    fputs("not a line of ours\n", f);
    fclose(f);
    ConvAlgoCache *cache = calloc(1, sizeof *cache);
    CHECK(conv_algo_cache_load(cache, path) == 2, "two distinct keys load (%d)", cache->count);
    ConvAlgoEntry *found = conv_algo_cache_find(cache, &down);
    CHECK(found && found->algo[0] == 1, "the first line of a key wins");
    down.n = 16;
    found = conv_algo_cache_find(cache, &down);
    CHECK(found && found->algo[2] == 1, "the other batch has its own choice");
    unlink(path);
    CHECK(conv_algo_cache_load(cache, path) == -1, "a missing file reads as -1");
    free(cache);
}

/* ---- the transposed backward-data method ---- */

/* stride 1, padding (pad_h, pad_w) on both sides, kernels and images possibly not square */
static ConvShape shape_hw(int n, int h, int w, int c, int oc, int kh, int kw, int pad_h,
                          int pad_w) {
    ConvShape s = {.n = n, .h = h, .w = w, .c = c, .oc = oc, .kh = kh, .kw = kw, .stride = 1,
                   .pad_top = pad_h, .pad_left = pad_w, .pad_bottom = pad_h,
                   .pad_right = pad_w};
    conv_shape_finish(&s);
    return s;
}

static void test_transposed_applies(void) {
    CHECK(conv_transposed_applies(&(ConvShape){.stride = 1, .kh = 3, .kw = 3, .pad_top = 1,
                                               .pad_left = 1, .pad_bottom = 1, .pad_right = 1}),
          "3x3 pad 1 stride 1");
    ConvShape s = shape(2, 8, 4, 6, 3, 1, 1, 1);
    CHECK(conv_transposed_applies(&s), "3x3 same");
    s = shape(2, 8, 4, 6, 1, 1, 0, 0);
    CHECK(conv_transposed_applies(&s), "1x1");
    s = shape(2, 8, 4, 6, 3, 1, 0, 0);
    CHECK(conv_transposed_applies(&s), "3x3 pad 0 (valid)");
    s = shape(2, 8, 4, 6, 3, 1, 2, 2);
    CHECK(conv_transposed_applies(&s), "3x3 pad 2 = K - 1");
    s = shape(2, 8, 4, 6, 3, 1, 3, 3);
    CHECK(!conv_transposed_applies(&s), "pad 3 > K - 1: the transposed padding would be < 0");
    s = shape(2, 8, 4, 6, 3, 2, 1, 1);
    CHECK(!conv_transposed_applies(&s), "stride 2");
    s = shape(2, 8, 4, 6, 3, 2, 0, 1);
    CHECK(!conv_transposed_applies(&s), "the downsampling conv");
    s = shape(2, 8, 4, 6, 3, 1, 0, 1);
    CHECK(!conv_transposed_applies(&s), "asymmetric padding at stride 1");
    s = shape_hw(2, 7, 9, 4, 6, 3, 1, 1, 0);
    CHECK(conv_transposed_applies(&s), "3x1 kernel, pad (1, 0)");
    s = shape_hw(2, 7, 9, 4, 6, 3, 1, 1, 1);
    CHECK(!conv_transposed_applies(&s), "3x1 kernel, pad 1 across a width-1 kernel");
}

/* The transposed shape maps dy back to dx's size, and its padding is K - 1 - p. */
static void test_transposed_shape(void) {
    const ConvShape cases[] = {shape(4, 8, 5, 7, 3, 1, 1, 1), shape(2, 6, 3, 9, 1, 1, 0, 0),
                               shape(2, 9, 4, 4, 3, 1, 0, 0), shape(3, 5, 2, 6, 3, 1, 2, 2),
                               shape_hw(2, 7, 9, 4, 6, 3, 1, 1, 0),
                               shape_hw(2, 6, 10, 3, 5, 5, 3, 1, 2)};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const ConvShape *s = &cases[i];
        ConvShape t = conv_transposed_shape(s);
        const int oh = t.oh, ow = t.ow;
        conv_shape_finish(&t);   /* what cuDNN computes from the transposed geometry */
        CHECK(t.oh == oh && t.ow == ow && t.oh == s->h && t.ow == s->w,
              "case %zu: transposed output %dx%d (recorded %dx%d), input %dx%d", i, t.oh, t.ow,
              oh, ow, s->h, s->w);
        CHECK(t.n == s->n && t.h == s->oh && t.w == s->ow && t.c == s->oc && t.oc == s->c &&
                  t.kh == s->kh && t.kw == s->kw && t.stride == 1,
              "case %zu: dy (N, OH, OW, OC) in, dx (N, H, W, C) out", i);
        CHECK(t.pad_top == s->kh - 1 - s->pad_top && t.pad_bottom == t.pad_top &&
                  t.pad_left == s->kw - 1 - s->pad_left && t.pad_right == t.pad_left &&
                  !conv_needs_explicit_padding(&t),
              "case %zu: symmetric padding K - 1 - p", i);
    }
}

/* Small integers: every sum below is exact in float, so the two ways must agree bit
 * for bit whatever their order of additions. */
static float *small_integers(size_t n, unsigned seed) {
    float *v = malloc(n * sizeof(float));
    unsigned state = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        state = state * 1103515245u + 12345u;
        v[i] = (float)((int)(state >> 16 & 7) - 3);
    }
    return v;
}

/* y (N, OH, OW, OC) = the correlation of x with w (OC, KH, KW, C), zeros outside x */
static void reference_forward(float *y, const float *x, const float *w, const ConvShape *s) {
    for (int b = 0; b < s->n; b++)
        for (int oy = 0; oy < s->oh; oy++)
            for (int ox = 0; ox < s->ow; ox++)
                for (int o = 0; o < s->oc; o++) {
                    float sum = 0.0f;
                    for (int ky = 0; ky < s->kh; ky++)
                        for (int kx = 0; kx < s->kw; kx++) {
                            const int iy = oy * s->stride - s->pad_top + ky;
                            const int ix = ox * s->stride - s->pad_left + kx;
                            if (iy < 0 || iy >= s->h || ix < 0 || ix >= s->w) continue;
                            for (int c = 0; c < s->c; c++)
                                sum += x[((size_t)(b * s->h + iy) * s->w + ix) * s->c + c] *
                                       w[((size_t)(o * s->kh + ky) * s->kw + kx) * s->c + c];
                        }
                    y[((size_t)(b * s->oh + oy) * s->ow + ox) * s->oc + o] = sum;
                }
}

/* dx (N, H, W, C): each dy element sent back along the weights to the inputs it read,
 * straight from the definition of the forward (not the gather the identity gives). */
static void reference_backward_data(float *dx, const float *dy, const float *w,
                                    const ConvShape *s) {
    memset(dx, 0, (size_t)s->n * s->h * s->w * s->c * sizeof(float));
    for (int b = 0; b < s->n; b++)
        for (int oy = 0; oy < s->oh; oy++)
            for (int ox = 0; ox < s->ow; ox++)
                for (int o = 0; o < s->oc; o++) {
                    const float g = dy[((size_t)(b * s->oh + oy) * s->ow + ox) * s->oc + o];
                    for (int ky = 0; ky < s->kh; ky++)
                        for (int kx = 0; kx < s->kw; kx++) {
                            const int iy = oy * s->stride - s->pad_top + ky;
                            const int ix = ox * s->stride - s->pad_left + kx;
                            if (iy < 0 || iy >= s->h || ix < 0 || ix >= s->w) continue;
                            for (int c = 0; c < s->c; c++)
                                dx[((size_t)(b * s->h + iy) * s->w + ix) * s->c + c] +=
                                    g * w[((size_t)(o * s->kh + ky) * s->kw + kx) * s->c + c];
                        }
                }
}

/* Backward data = the forward conv of dy with W' (conv_transposed_weight_source) on the
 * transposed shape: the identity the CUDA backend relies on, on the CPU. */
static void check_transposed_identity(const char *name, const ConvShape *s) {
    const size_t x_n = (size_t)s->n * s->h * s->w * s->c, y_n = (size_t)s->n * s->oh * s->ow * s->oc;
    const size_t w_n = (size_t)s->oc * s->kh * s->kw * s->c;
    float *dy = small_integers(y_n, 1), *w = small_integers(w_n, 2);
    float *wt = malloc(w_n * sizeof(float));
    float *expected = malloc(x_n * sizeof(float)), *got = malloc(x_n * sizeof(float));
    int is_permutation = 1;
    char *seen = calloc(w_n, 1);
    for (size_t i = 0; i < w_n; i++) {
        const size_t from = conv_transposed_weight_source(i, s->c, s->kh, s->kw, s->oc);
        if (from >= w_n || seen[from]) is_permutation = 0;
        else seen[from] = 1;
        wt[i] = from < w_n ? w[from] : NAN;
    }
    CHECK(is_permutation, "%s: W' takes every weight once", name);
    reference_backward_data(expected, dy, w, s);
    const ConvShape t = conv_transposed_shape(s);
    reference_forward(got, dy, wt, &t);
    size_t differ = 0;
    for (size_t i = 0; i < x_n; i++) differ += got[i] != expected[i];
    CHECK(differ == 0, "%s: the transposed forward differs from backward data in %zu of %zu",
          name, differ, x_n);
    free(dy);
    free(w);
    free(wt);
    free(expected);
    free(got);
    free(seen);
}

static void test_transposed_identity(void) {
    ConvShape s = shape(2, 6, 5, 7, 3, 1, 1, 1);
    check_transposed_identity("3x3 pad 1, C 5 != OC 7", &s);
    s = shape(3, 5, 7, 4, 1, 1, 0, 0);
    check_transposed_identity("1x1 pad 0", &s);
    s = shape(2, 7, 3, 4, 3, 1, 0, 0);
    check_transposed_identity("3x3 pad 0", &s);
    s = shape(2, 4, 3, 2, 3, 1, 2, 2);
    check_transposed_identity("3x3 pad 2", &s);
    s = shape_hw(2, 5, 8, 3, 4, 3, 1, 1, 0);
    check_transposed_identity("3x1 kernel on 5x8", &s);
    s = shape_hw(1, 6, 7, 2, 3, 5, 3, 2, 1);
    check_transposed_identity("5x3 kernel, pad (2, 1), on 6x7", &s);
}

/* W' has its own aligned share of the workspace, only with the transposed method. */
static void test_transposed_workspace(void) {
    ConvShape s = shape(2, 8, 5, 7, 3, 1, 1, 1);
    const size_t weight = conv_transposed_weight_bytes(&s);
    CHECK(weight == conv_align((size_t)7 * 3 * 3 * 5 * sizeof(float)), "W' bytes %zu", weight);
    ConvAlgoEntry e = {.algo = {1, 1, 1}, .algo_bytes = {100, 5000, 300}};
    CHECK(conv_entry_fixed_bytes(&e, &s) == 0, "cuDNN's backward data: no fixed part");
    e.algo[CONV_BACKWARD_DATA] = conv_bwd_data_transposed(1);
    CHECK(conv_bwd_data_is_transposed(e.algo[CONV_BACKWARD_DATA]) &&
              conv_transposed_forward_algo(e.algo[CONV_BACKWARD_DATA]) == 1,
          "the encoding round-trips");
    CHECK(!conv_bwd_data_is_transposed(0) && !conv_bwd_data_is_transposed(5) &&
              conv_bwd_data_is_transposed(conv_bwd_data_transposed(0)),
          "cuDNN's own algorithm numbers are not the transposed method");
    CHECK(conv_entry_fixed_bytes(&e, &s) == weight, "fixed part = W'");
    CHECK(conv_entry_workspace_bytes(&e, &s) == weight + 5000, "W' + the largest: %zu",
          conv_entry_workspace_bytes(&e, &s));
    ConvShape down = shape(2, 8, 4, 4, 3, 2, 0, 1);
    e.algo[CONV_BACKWARD_DATA] = 1;
    CHECK(conv_entry_fixed_bytes(&e, &down) == conv_padded_input_bytes(&down),
          "explicit padding alone");
}

/* A transposed choice goes through the file and back, and leads to its prepared entry. */
static void test_transposed_choice(void) {
    ConvShape s = shape(128, 32, 256, 256, 3, 1, 1, 1);
    ConvAlgoEntry e = {.algo = {0, conv_bwd_data_transposed(1), 1}, .math = {3, 3, 3}};
    e.key = conv_key(&s);
    char line[256];
    conv_algo_line_format(line, sizeof line, &e);
    ConvAlgoEntry back;
    CHECK(conv_algo_line_parse(line, &back) && back.algo[CONV_BACKWARD_DATA] == 1001 &&
              memcmp(back.algo, e.algo, sizeof e.algo) == 0,
          "a transposed choice round-trips: %s", line);
    CHECK(conv_algo_line_parse("128 32 32 256 256 3 3 1 1 1 1 1  0 0 1  3 3 3\n", &back) &&
              back.algo[CONV_BACKWARD_DATA] == 0 &&
              !conv_bwd_data_is_transposed(back.algo[CONV_BACKWARD_DATA]),
          "a line of the old kind still parses, as cuDNN's backward data");

    ConvAlgoCache *cache = calloc(1, sizeof *cache);
    ConvAlgoEntry *prepared = conv_algo_cache_add(cache, &s);
    memcpy(prepared->algo, e.algo, sizeof e.algo);
    ConvShape run = s;
    run.n = 1;
    memcpy(run.algo, e.algo, sizeof e.algo);
    CHECK(conv_algo_cache_find_prepared(cache, &run) == prepared,
          "a smaller batch finds its transposed parent");
    run.algo[CONV_BACKWARD_DATA] = 1;
    CHECK(conv_algo_cache_find_prepared(cache, &run) == NULL,
          "cuDNN's algorithm 1 is not the transposed method with forward algorithm 1");
    free(cache);
}

int main(void) {
    test_padding_geometry();
    test_workspace_size();
    test_lookup();
    test_choices_file();
    test_transposed_applies();
    test_transposed_shape();
    test_transposed_identity();
    test_transposed_workspace();
    test_transposed_choice();
    return test_summary("conv_algo_cache");
}
