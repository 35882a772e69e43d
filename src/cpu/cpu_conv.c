/* 2-D convolution on the CPU, NHWC: the op table's conv2d_* entries, which dispatch to
 * oneDNN's direct kernels (cpu_conv_onednn.c) or to the im2col path below, the oracle
 * (cpu_conv_paths.h says how the choice is made).
 *
 * The im2col path: im2col + OpenBLAS SGEMM.
 *
 * The im2col row of output pixel (n, oy, ox) concatenates, over (ky, kx), the C
 * channels of input pixel (oy*stride - pad_top + ky, ox*stride - pad_left + kx),
 * zeros outside the image. Its columns are ordered (KH, KW, C) like the weight
 * (OC, KH, KW, C), so the convolution is a linear layer over the column matrix:
 *     y (N*OH*OW, OC) = col (N*OH*OW, K) w^T + b,    K = KH*KW*C,
 * and its backward is that layer's backward followed by col2im, which returns each
 * column gradient to the input pixel it was read from.
 *
 * The column matrix lives in the caller's workspace, a chunk of samples at a time:
 * bounded memory (about 32 MiB) while the GEMMs keep thousands of rows. A 1x1,
 * stride-1, unpadded conv skips im2col: x already is the column matrix.
 * col2im gathers into each input pixel in a fixed order instead of scattering from
 * each output pixel, so it parallelises without atomics and is deterministic.
 */
#include <cblas.h>
#include <string.h>

#include <stdlib.h>

#include "cpu_conv_paths.h"
#include "util.h"

/* The column matrix of one chunk should fit in about this much memory. */
#define COL_CHUNK_BUDGET_BYTES ((size_t)32 << 20)

static int is_pointwise(const ConvShape *s) {
    return s->kh == 1 && s->kw == 1 && s->stride == 1 && s->pad_top == 0 && s->pad_left == 0 &&
           s->pad_bottom == 0 && s->pad_right == 0;
}

static size_t col_width(const ConvShape *s) { return (size_t)s->kh * s->kw * s->c; }
static size_t input_per_sample(const ConvShape *s) { return (size_t)s->h * s->w * s->c; }
static size_t output_pixels_per_sample(const ConvShape *s) { return (size_t)s->oh * s->ow; }
static size_t col_bytes_per_sample(const ConvShape *s) {
    return output_pixels_per_sample(s) * col_width(s) * sizeof(float);
}

/* As many samples as fit the budget (at least one), then evened out over the
 * chunks so the last GEMM is not a sliver. */
static int samples_per_chunk(const ConvShape *s) {
    const size_t fit = COL_CHUNK_BUDGET_BYTES / col_bytes_per_sample(s);
    const int most = fit < 1 ? 1 : fit > (size_t)s->n ? s->n : (int)fit;
    const int chunks = (s->n + most - 1) / most;
    return (s->n + chunks - 1) / chunks;
}

/* Sized for every batch up to s->n: a smaller batch evens out over fewer chunks, so its
 * chunk can be larger than the full batch's (36 of 64 in one chunk, where 64 took two of
 * 32), but never more than what fits the budget, nor more than s->n. */
size_t im2col_conv_workspace(const ConvShape *s) {
    const size_t fit = COL_CHUNK_BUDGET_BYTES / col_bytes_per_sample(s);
    const size_t most = fit < 1 ? 1 : fit > (size_t)s->n ? (size_t)s->n : fit;
    return is_pointwise(s) ? 0 : most * col_bytes_per_sample(s);
}

/* col (nc*OH*OW, K) = the receptive fields of the nc samples starting at x. */
static void im2col(float *col, const float *x, int nc, const ConvShape *s) {
    const size_t width = col_width(s), kx_span = (size_t)s->kw * s->c;
    const long rows = (long)nc * s->oh * s->ow;
#pragma omp parallel for schedule(static)
    for (long r = 0; r < rows; r++) {
        const int ox = (int)(r % s->ow), oy = (int)(r / s->ow % s->oh);
        const int n = (int)(r / s->ow / s->oh);
        const int iy0 = oy * s->stride - s->pad_top, ix0 = ox * s->stride - s->pad_left;
        const float *image = x + n * input_per_sample(s);
        float *dst = col + r * width;
        for (int ky = 0; ky < s->kh; ky++, dst += kx_span) {
            const int iy = iy0 + ky;
            if (iy < 0 || iy >= s->h) {
                memset(dst, 0, kx_span * sizeof(float));
                continue;
            }
            const float *src_row = image + (size_t)iy * s->w * s->c;
            if (ix0 >= 0 && ix0 + s->kw <= s->w) {   /* NHWC: the KW pixels are contiguous */
                memcpy(dst, src_row + (size_t)ix0 * s->c, kx_span * sizeof(float));
                continue;
            }
            for (int kx = 0; kx < s->kw; kx++) {
                const int ix = ix0 + kx;
                float *seg = dst + (size_t)kx * s->c;
                if (ix < 0 || ix >= s->w) memset(seg, 0, (size_t)s->c * sizeof(float));
                else memcpy(seg, src_row + (size_t)ix * s->c, (size_t)s->c * sizeof(float));
            }
        }
    }
}

/* The output coordinate that read input coordinate i at kernel offset k, or -1. */
static int reading_output(int i, int k, int pad, int stride, int out_size) {
    const int t = i + pad - k;
    if (t < 0 || t % stride) return -1;
    return t / stride < out_size ? t / stride : -1;
}

/* dx (nc, H, W, C) = beta*dx + the column gradients of every read of each pixel.
 * Written as a gather so beta = 0 never reads dx and pixels no output read get 0. */
static void col2im(float *dx, float beta, const float *dcol, int nc, const ConvShape *s) {
    const size_t width = col_width(s), channels = (size_t)s->c;
    const long pixels = (long)nc * s->h * s->w;
#pragma omp parallel for schedule(static)
    for (long p = 0; p < pixels; p++) {
        const int ix = (int)(p % s->w), iy = (int)(p / s->w % s->h), n = (int)(p / s->w / s->h);
        float *dst = dx + p * channels;
        if (beta == 0.0f) memset(dst, 0, channels * sizeof(float));
        else if (beta != 1.0f)
            for (size_t ch = 0; ch < channels; ch++) dst[ch] *= beta;
        for (int ky = 0; ky < s->kh; ky++) {
            const int oy = reading_output(iy, ky, s->pad_top, s->stride, s->oh);
            if (oy < 0) continue;
            for (int kx = 0; kx < s->kw; kx++) {
                const int ox = reading_output(ix, kx, s->pad_left, s->stride, s->ow);
                if (ox < 0) continue;
                const size_t row = ((size_t)n * s->oh + oy) * s->ow + ox;
                const float *src = dcol + row * width + (size_t)(ky * s->kw + kx) * channels;
                for (size_t ch = 0; ch < channels; ch++) dst[ch] += src[ch];
            }
        }
    }
}

void im2col_conv_forward(const ConvShape *s, float *y, const float *x, const float *w,
                         const float *b, const float *residual, void *workspace) {
    const int width = (int)col_width(s);
    if (is_pointwise(s)) {
        cpu_linear_forward_residual(y, x, w, b, residual, s->n * s->h * s->w, width, s->oc);
        return;
    }
    float *col = workspace;
    const int chunk = samples_per_chunk(s);
    const int rows_per_sample = (int)output_pixels_per_sample(s);
    for (int n0 = 0; n0 < s->n; n0 += chunk) {
        const int nc = s->n - n0 < chunk ? s->n - n0 : chunk;
        im2col(col, x + n0 * input_per_sample(s), nc, s);
        const size_t out0 = (size_t)n0 * rows_per_sample * s->oc;
        cpu_linear_forward_residual(y + out0, col, w, b, residual ? residual + out0 : NULL,
                                    nc * rows_per_sample, width, s->oc);
    }
}

void im2col_conv_backward(const ConvShape *s, float *dx, float beta, float *dw, float *db,
                          const float *dy, const float *x, const float *w, void *workspace) {
    const int width = (int)col_width(s), rows_per_sample = (int)output_pixels_per_sample(s);
    if (is_pointwise(s)) {
        cpu_linear_backward(dx, beta, dw, db, dy, x, w, s->n * rows_per_sample, width, s->oc);
        return;
    }
    float *col = workspace;   /* the chunk's columns, then their gradient */
    const int chunk = samples_per_chunk(s);
    for (int n0 = 0; n0 < s->n; n0 += chunk) {
        const int nc = s->n - n0 < chunk ? s->n - n0 : chunk, rows = nc * rows_per_sample;
        const float *dy_chunk = dy + (size_t)n0 * rows_per_sample * s->oc;
        im2col(col, x + n0 * input_per_sample(s), nc, s);
        /* dw (OC, K) += dy^T (OC, rows) col (rows, K); the first chunk overwrites */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, s->oc, width, rows, 1.0f, dy_chunk,
                    s->oc, col, width, n0 == 0 ? 0.0f : 1.0f, dw, width);
        if (dx) {
            /* dcol (rows, K) = dy (rows, OC) w (OC, K), over the columns no longer needed */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, width, s->oc, 1.0f,
                        dy_chunk, s->oc, w, width, 0.0f, col, width);
            col2im(dx + n0 * input_per_sample(s), beta, col, nc, s);
        }
    }
    if (db) cpu_column_sums(db, dy, (size_t)s->n * rows_per_sample, s->oc);
}

/* ---- the choice of path, and the op table's entries ---- */

static int path_chosen;
static CpuConvPath path;

const char *cpu_conv_path_name(CpuConvPath p) { return p == CONV_PATH_ONEDNN ? "onednn" : "im2col"; }

int cpu_conv_set_path(CpuConvPath p) {
#ifndef DDPM_ONEDNN
    if (p == CONV_PATH_ONEDNN) return -1;
#endif
    path = p;
    path_chosen = 1;
    return 0;
}

CpuConvPath cpu_conv_path(void) {
    static const char *const names[2] = {"im2col", "onednn"};
#ifdef DDPM_ONEDNN
    const int built = 1;
#else
    const int built = 0;
#endif
    if (!path_chosen) cpu_conv_set_path((CpuConvPath)cpu_env_choice("DDPM_CPU_CONV", names, built));
    return path;
}

/* Enough for either path, so that a batch whose oneDNN entry would need more than was
 * prepared (a batch larger than the prepared one never runs) can still run on im2col. */
void cpu_conv2d_prepare(ConvShape *s) {
    s->workspace_bytes = im2col_conv_workspace(s);
#ifdef DDPM_ONEDNN
    if (cpu_conv_path() == CONV_PATH_ONEDNN) {
        const size_t need = onednn_conv_workspace(s);
        if (need > s->workspace_bytes) s->workspace_bytes = need;
    }
#endif
}

#ifdef DDPM_ONEDNN
static int onednn_runs(const ConvShape *s) {
    return cpu_conv_path() == CONV_PATH_ONEDNN && onednn_conv_workspace(s) <= s->workspace_bytes;
}
#endif

void cpu_conv2d_forward(const ConvShape *s, float *y, const float *x, const float *w,
                        const float *b, const float *residual, void *workspace) {
#ifdef DDPM_ONEDNN
    if (onednn_runs(s)) {
        onednn_conv_forward(s, y, x, w, b, residual, workspace);
        return;
    }
#endif
    im2col_conv_forward(s, y, x, w, b, residual, workspace);
}

void cpu_conv2d_backward(const ConvShape *s, float *dx, float beta, float *dw, float *db,
                         const float *dy, const float *x, const float *w, void *workspace) {
#ifdef DDPM_ONEDNN
    if (onednn_runs(s)) {
        onednn_conv_backward_weights(s, dw, dy, x, workspace);
        if (dx) onednn_conv_backward_data(s, dx, beta, dy, w, workspace);
        if (db) cpu_column_sums(db, dy, (size_t)s->n * s->oh * s->ow, s->oc);
        return;
    }
#endif
    im2col_conv_backward(s, dx, beta, dw, db, dy, x, w, workspace);
}
