/* Elementwise and layout ops of the CPU backend: SiLU, adds, bias, dropout,
 * nearest upsampling, channel concat, the sinusoidal timestep embedding and the bf16
 * rounding of mixed precision.
 * Apart from SiLU (which GroupNorm's fused form also calls) everything here is
 * memory-bound; loops parallelize only when large enough to pay for waking the
 * OpenMP team. */
#include <math.h>
#include <string.h>

#include "bf16.h"
#include "cpu_backend.h"
#include "cpu_math.h"

enum {
    PARALLEL_MIN = 1 << 15,     /* elements below which one thread is faster */
    CHANNEL_BLOCK = 256,        /* channels summed at once by add_bias_backward */
    DROPOUT_RUN = 256,          /* elements whose random words are drawn at once; 4 divides it */
};

static inline float sigmoid(float v) { return 1.0f / (1.0f + exp_saturating(-v)); }

/* beta*old + v, where beta 0 ignores whatever old holds, NaN included. Selecting old
 * rather than the result keeps the choice a select the loops vectorize. */
static inline float blend(float old, float beta, float v) {
    return beta * (beta == 0.0f ? 0.0f : old) + v;
}

static inline float silu(float x) { return x * sigmoid(x); }

static inline float silu_grad(float dx_old, float beta, float dy, float x) {
    float sig = sigmoid(x);
    return blend(dx_old, beta, dy * sig * (1.0f + x * (1.0f - sig)));
}

void cpu_silu_forward(float *y, const float *x, size_t n) {
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) y[i] = silu(x[i]);
}

void cpu_silu_backward(float *dx, float beta, const float *dy, const float *x, size_t n) {
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) dx[i] = silu_grad(dx[i], beta, dy[i], x[i]);
}

void cpu_silu_range(float *y, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = silu(x[i]);
}

void cpu_silu_backward_range(float *dx, float beta, const float *dy, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) dx[i] = silu_grad(dx[i], beta, dy[i], x[i]);
}

void cpu_add_forward(float *y, const float *a, const float *b, size_t n) {
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

void cpu_accumulate(float *dst, float beta, const float *src, size_t n) {
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) dst[i] = blend(dst[i], beta, src[i]);
}

/* With a channel bias, each sample's combined bias is formed per row (c adds, against
 * the row's c): cheaper than a second pass over y. */
void cpu_add_bias_forward(float *y, const float *x, const float *bias, const float *channel_bias,
                          int n, int hw, int c) {
    size_t rows = (size_t)n * hw;
#pragma omp parallel for schedule(static) if (rows * c >= PARALLEL_MIN)
    for (size_t row = 0; row < rows; row++) {
        const float *b = bias + row / (size_t)hw * c;
        if (channel_bias)
            for (int ch = 0; ch < c; ch++) y[row * c + ch] = x[row * c + ch] + (b[ch] + channel_bias[ch]);
        else
            for (int ch = 0; ch < c; ch++) y[row * c + ch] = x[row * c + ch] + b[ch];
    }
}

/* One sample's dbias for channels [c0, c0 + width): double accumulators, since a
 * channel can sum thousands of rows. */
static void sum_rows(float *dbias, float beta, const float *dy, int hw, int c, int c0, int width) {
    double acc[CHANNEL_BLOCK] = {0};
    for (int p = 0; p < hw; p++) {
        const float *row = dy + (size_t)p * c + c0;
        for (int k = 0; k < width; k++) acc[k] += row[k];
    }
    for (int k = 0; k < width; k++) dbias[c0 + k] = blend(dbias[c0 + k], beta, (float)acc[k]);
}

void cpu_add_bias_backward(float *dbias, float beta, const float *dy, int n, int hw, int c) {
    int blocks = (c + CHANNEL_BLOCK - 1) / CHANNEL_BLOCK;
#pragma omp parallel for collapse(2) schedule(static) if ((size_t)n * hw * c >= PARALLEL_MIN)
    for (int i = 0; i < n; i++) {
        for (int blk = 0; blk < blocks; blk++) {
            int c0 = blk * CHANNEL_BLOCK;
            int width = c - c0 < CHANNEL_BLOCK ? c - c0 : CHANNEL_BLOCK;
            sum_rows(dbias + (size_t)i * c, beta, dy + (size_t)i * hw * c, hw, c, c0, width);
        }
    }
}

void cpu_mean_pool_forward(float *y, const float *x, int n, int hw, int c) {
    for (int i = 0; i < n; i++)
        for (int ch = 0; ch < c; ch++) {
            double sum = 0;
            for (int p = 0; p < hw; p++) sum += x[((size_t)i * hw + p) * c + ch];
            y[(size_t)i * c + ch] = (float)(sum / hw);
        }
}

void cpu_mean_pool_backward(float *dx, float beta, const float *dy, int n, int hw, int c) {
    const float count = (float)hw;
    for (int i = 0; i < n; i++)
        for (int p = 0; p < hw; p++)
            for (int ch = 0; ch < c; ch++) {
                size_t at = ((size_t)i * hw + p) * c + ch;
                dx[at] = blend(dx[at], beta, dy[(size_t)i * c + ch] / count);
            }
}

/* One run of `count` elements of one sample, from element e0 (a multiple of 4).
 * philox_uniform(key, s, e) is word e%4 of the block of e, so each block serves
 * four elements; the blocks are drawn first, in a loop that vectorizes. The mask
 * multiplies as in PyTorch (x * mask/(1-p)). */
static void dropout_run(float *out, float beta, const float *in, size_t count, uint32_t s,
                        size_t e0, float p, float scale, RngKey key) {
    union {
        Philox4 blocks[DROPOUT_RUN / 4];
        uint32_t words[DROPOUT_RUN];    /* word k is element e0 + k's */
    } r;
    for (size_t q = 0; q < (count + 3) / 4; q++) r.blocks[q] = philox_block(key, s, e0 + 4 * q);
    for (size_t k = 0; k < count; k++) {
        float mask = philox_u01(r.words[k]) >= p ? scale : 0.0f;
        out[k] = blend(out[k], beta, in[k] * mask);
    }
}

void cpu_dropout_range(float *out, float beta, const float *in, size_t count, uint32_t s,
                       size_t e0, float p, RngKey key) {
    float scale = 1.0f / (1.0f - p);
    size_t k = 0;
    for (; k < count && (e0 + k) % 4; k++) {   /* up to the first element a block starts */
        float mask = philox_uniform(key, s, e0 + k) >= p ? scale : 0.0f;
        out[k] = blend(out[k], beta, in[k] * mask);
    }
    for (; k < count; k += DROPOUT_RUN) {
        size_t run = count - k < DROPOUT_RUN ? count - k : DROPOUT_RUN;
        dropout_run(out + k, beta, in + k, run, s, e0 + k, p, scale, key);
    }
}

/* out = beta*out + mask*in/(1-p): the forward (beta 0) and the backward alike,
 * since inverted dropout is its own derivative given the mask. */
static void dropout_apply(float *out, float beta, const float *in, int n, size_t per_sample,
                          float p, RngKey key) {
    if (p == 0.0f) {    /* every philox_uniform is > 0: all kept, scale 1 */
        cpu_accumulate(out, beta, in, (size_t)n * per_sample);
        return;
    }
    float scale = 1.0f / (1.0f - p);
    size_t runs = (per_sample + DROPOUT_RUN - 1) / DROPOUT_RUN;
#pragma omp parallel for collapse(2) schedule(static) if ((size_t)n * per_sample >= PARALLEL_MIN)
    for (int s = 0; s < n; s++) {
        for (size_t r = 0; r < runs; r++) {
            size_t e0 = r * DROPOUT_RUN, off = (size_t)s * per_sample + e0;
            size_t count = per_sample - e0 < DROPOUT_RUN ? per_sample - e0 : DROPOUT_RUN;
            dropout_run(out + off, beta, in + off, count, (uint32_t)s, e0, p, scale, key);
        }
    }
}

void cpu_dropout_forward(float *y, const float *x, int n, size_t per_sample, float p, RngKey key) {
    dropout_apply(y, 0.0f, x, n, per_sample, p, key);
}

void cpu_dropout_backward(float *dx, float beta, const float *dy, int n, size_t per_sample,
                          float p, RngKey key) {
    dropout_apply(dx, beta, dy, n, per_sample, p, key);
}

/* Input row r = (sample, i) of width w maps to output rows 2r and 2r+1 of width 2w,
 * because (sample*2h + 2i) = 2r. */
void cpu_upsample2x_forward(float *y, const float *x, int n, int h, int w, int c) {
    size_t rows = (size_t)n * h, in_row = (size_t)w * c, out_row = 2 * in_row;
#pragma omp parallel for schedule(static) if (rows * in_row >= PARALLEL_MIN)
    for (size_t r = 0; r < rows; r++) {
        const float *src = x + r * in_row;
        float *top = y + 2 * r * out_row, *bottom = top + out_row;
        for (int j = 0; j < w; j++) {
            for (int ch = 0; ch < c; ch++) {
                float v = src[(size_t)j * c + ch];
                top[(size_t)(2 * j) * c + ch] = v;
                top[(size_t)(2 * j + 1) * c + ch] = v;
            }
        }
        memcpy(bottom, top, out_row * sizeof(float));
    }
}

void cpu_upsample2x_backward(float *dx, float beta, const float *dy, int n, int h, int w, int c) {
    size_t rows = (size_t)n * h, in_row = (size_t)w * c, out_row = 2 * in_row;
#pragma omp parallel for schedule(static) if (rows * in_row >= PARALLEL_MIN)
    for (size_t r = 0; r < rows; r++) {
        const float *top = dy + 2 * r * out_row, *bottom = top + out_row;
        float *dst = dx + r * in_row;
        for (int j = 0; j < w; j++) {
            size_t left = (size_t)(2 * j) * c, right = left + (size_t)c;
            for (int ch = 0; ch < c; ch++) {
                float v = (top[left + ch] + top[right + ch]) +
                          (bottom[left + ch] + bottom[right + ch]);
                dst[(size_t)j * c + ch] = blend(dst[(size_t)j * c + ch], beta, v);
            }
        }
    }
}

void cpu_concat_forward(float *y, const float *a, const float *b, size_t p, int ca, int cb) {
    size_t width = (size_t)ca + cb;
#pragma omp parallel for schedule(static) if (p * width >= PARALLEL_MIN)
    for (size_t r = 0; r < p; r++) {
        memcpy(y + r * width, a + r * ca, (size_t)ca * sizeof(float));
        memcpy(y + r * width + ca, b + r * cb, (size_t)cb * sizeof(float));
    }
}

/* dst row r (width cols) = blend with src row r, where src rows are `stride` apart */
static void gather_columns(float *dst, float beta, const float *src, size_t p, int cols,
                           size_t stride) {
#pragma omp parallel for schedule(static) if (p * cols >= PARALLEL_MIN)
    for (size_t r = 0; r < p; r++)
        for (int k = 0; k < cols; k++)
            dst[r * cols + k] = blend(dst[r * cols + k], beta, src[r * stride + k]);
}

void cpu_concat_backward(float *da, float beta_a, float *db, float beta_b, const float *dy,
                         size_t p, int ca, int cb) {
    size_t width = (size_t)ca + cb;
    if (da) gather_columns(da, beta_a, dy, p, ca, width);
    if (db) gather_columns(db, beta_b, dy + ca, p, cb, width);
}

/* diffusers get_timestep_embedding (flip_sin_to_cos=False, downscale_freq_shift=1).
 * The exponent is formed in float as PyTorch does from a float32 arange; the
 * frequency and the argument t*f are in double, since t*f reaches ~1000 where a
 * float argument would lose ~1e-4 of phase. t is float: an integer t below 2^24 converts
 * to the same double as the int32 it replaces, so integer timesteps embed as before. */
void cpu_timestep_embedding(float *y, const float *t, int n, int dim) {
    int half = dim / 2;
    float neg_log_period = (float)-log(10000.0);
    for (int s = 0; s < n; s++) {
        float *row = y + (size_t)s * dim;
        for (int i = 0; i < half; i++) {
            float exponent = (float)i * neg_log_period / (float)(half - 1);
            double arg = (double)t[s] * exp((double)exponent);
            row[i] = (float)sin(arg);
            row[half + i] = (float)cos(arg);
        }
    }
}

void cpu_embedding_forward(float *y, const int32_t *ids, const float *table, int n, int dim) {
    for (int i = 0; i < n; i++)
        memcpy(y + (size_t)i * dim, table + (size_t)ids[i] * dim, (size_t)dim * sizeof(float));
}

/* Rows are summed in float, in sample order, as the CUDA kernel does (one block per row,
 * looping over the samples), so both backends agree bit for bit. */
void cpu_embedding_backward(float *dtable, const float *dy, const int32_t *ids, int n, int rows,
                            int dim) {
    memset(dtable, 0, (size_t)rows * dim * sizeof(float));
    for (int i = 0; i < n; i++) {
        float *row = dtable + (size_t)ids[i] * dim;
        const float *g = dy + (size_t)i * dim;
        for (int j = 0; j < dim; j++) row[j] += g[j];
    }
}

void cpu_round_bf16(float *x, size_t n) {
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) x[i] = bf16_round(x[i]);
}
