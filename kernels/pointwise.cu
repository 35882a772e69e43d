/* Elementwise and layout ops of the CUDA backend: fill, bias broadcast, the bf16
 * rounding of mixed precision, SiLU, adds, per-sample bias, dropout, nearest x2
 * upsampling, channel concat, the sinusoidal timestep embedding and the class
 * embedding's gather (its backward: below). All
 * memory-bound, one thread per output element (dropout: per four, the elements one
 * Philox call serves), each computing what the CPU backend computes for that element,
 * in the same order of operations. Backward ops blend into their input gradient: beta 0
 * overwrites without reading. */
#include "column_sums.cuh"
#include "cuda_ops.cuh"

void cuda_fill(float *x, float value, size_t n) {
    launch_elementwise(n, [=] __device__(size_t i) { x[i] = value; });
}

void cuda_round_bf16(float *x, size_t n) {
    launch_elementwise(n, [=] __device__(size_t i) { x[i] = bf16_round_device(x[i]); });
}

void cuda_broadcast_rows(float *y, const float *bias, size_t rows, int cols) {
    launch_elementwise(rows * cols, [=] __device__(size_t i) { y[i] = bias[i % cols]; });
}

void cuda_silu_forward(float *y, const float *x, size_t n) {
    launch_elementwise(n, [=] __device__(size_t i) { y[i] = x[i] * sigmoid(x[i]); });
}

void cuda_silu_backward(float *dx, float beta, const float *dy, const float *x, size_t n) {
    launch_elementwise(n, [=] __device__(size_t i) {
        const float sig = sigmoid(x[i]);
        dx[i] = blend(dx[i], beta, dy[i] * sig * (1.0f + x[i] * (1.0f - sig)));
    });
}

void cuda_add_forward(float *y, const float *a, const float *b, size_t n) {
    launch_elementwise(n, [=] __device__(size_t i) { y[i] = a[i] + b[i]; });
}

void cuda_accumulate(float *dst, float beta, const float *src, size_t n) {
    launch_elementwise(n, [=] __device__(size_t i) { dst[i] = blend(dst[i], beta, src[i]); });
}

void cuda_add_bias_forward(float *y, const float *x, const float *bias, const float *channel_bias,
                           int n, int hw, int c) {
    const size_t per_sample = (size_t)hw * c;
    launch_elementwise((size_t)n * per_sample, [=] __device__(size_t i) {
        const float b = bias[i / per_sample * c + i % c];
        y[i] = x[i] + (channel_bias ? b + channel_bias[i % c] : b);
    });
}

void cuda_add_bias_backward(float *dbias, float beta, const float *dy, int n, int hw, int c) {
    column_sums_into(dbias, beta, dy, n, hw, c);
}

/* One thread per (sample, channel): adjacent threads read adjacent channels. */
void cuda_mean_pool_forward(float *y, const float *x, int n, int hw, int c) {
    launch_elementwise((size_t)n * c, [=] __device__(size_t i) {
        const size_t s = i / c, ch = i % c;
        double sum = 0;
        for (int p = 0; p < hw; p++) sum += x[(s * hw + p) * c + ch];
        y[i] = (float)(sum / hw);
    });
}

void cuda_mean_pool_backward(float *dx, float beta, const float *dy, int n, int hw, int c) {
    const float count = (float)hw;
    const size_t per_sample = (size_t)hw * c;
    launch_elementwise((size_t)n * per_sample, [=] __device__(size_t i) {
        dx[i] = blend(dx[i], beta, dy[i / per_sample * c + i % c] / count);
    });
}

/* out = beta*out + in*mask/(1-p), the mask drawn per element from key: the forward
 * (beta 0) and the backward alike. Thread q of sample s serves elements 4q..4q+3,
 * the four words of one Philox block. */
static void dropout_apply(float *out, float beta, const float *in, int n, size_t per_sample,
                          float p, RngKey key) {
    if (p == 0.0f) {   /* every philox_uniform is > 0: all kept, scale 1 */
        cuda_accumulate(out, beta, in, (size_t)n * per_sample);
        return;
    }
    const float scale = 1.0f / (1.0f - p);
    const size_t quads = (per_sample + 3) / 4;
    launch_elementwise((size_t)n * quads, [=] __device__(size_t q) {
        const uint32_t s = (uint32_t)(q / quads);
        const size_t e0 = q % quads * 4, base = (size_t)s * per_sample;
        const Philox4 r = philox_block(key, s, e0);
        for (int k = 0; k < 4 && e0 + k < per_sample; k++) {
            const float mask = philox_u01(r.v[k]) >= p ? scale : 0.0f;
            out[base + e0 + k] = blend(out[base + e0 + k], beta, in[base + e0 + k] * mask);
        }
    });
}

void cuda_dropout_forward(float *y, const float *x, int n, size_t per_sample, float p,
                          RngKey key) {
    dropout_apply(y, 0.0f, x, n, per_sample, p, key);
}

void cuda_dropout_backward(float *dx, float beta, const float *dy, int n, size_t per_sample,
                           float p, RngKey key) {
    dropout_apply(dx, beta, dy, n, per_sample, p, key);
}

/* y (N, 2H, 2W, C): output pixel (oy, ox) copies input pixel (oy/2, ox/2). */
void cuda_upsample2x_forward(float *y, const float *x, int n, int h, int w, int c) {
    launch_elementwise((size_t)n * 4 * h * w * c, [=] __device__(size_t i) {
        const int ch = (int)(i % c), ox = (int)(i / c % (2 * w));
        const size_t row = i / c / (2 * w);   /* (sample, oy) as one index: sample*2h + oy */
        const size_t in_row = row / (2 * h) * h + row % (2 * h) / 2;
        y[i] = x[(in_row * w + ox / 2) * c + ch];
    });
}

/* dx (N, H, W, C) = beta*dx + the sum of the 2x2 output pixels each input fed, added
 * as the CPU backend adds them: (top left + top right) + (bottom left + bottom right). */
void cuda_upsample2x_backward(float *dx, float beta, const float *dy, int n, int h, int w, int c) {
    const size_t out_row = (size_t)2 * w * c;
    launch_elementwise((size_t)n * h * w * c, [=] __device__(size_t i) {
        const int ch = (int)(i % c), j = (int)(i / c % w);
        const size_t r = i / c / w;   /* input row (sample, iy): output rows 2r and 2r+1 */
        const float *top = dy + 2 * r * out_row, *bottom = top + out_row;
        const size_t left = (size_t)(2 * j) * c + ch, right = left + c;
        const float v = (top[left] + top[right]) + (bottom[left] + bottom[right]);
        dx[i] = blend(dx[i], beta, v);
    });
}

void cuda_concat_forward(float *y, const float *a, const float *b, size_t p, int ca, int cb) {
    const int width = ca + cb;
    launch_elementwise(p * width, [=] __device__(size_t i) {
        const size_t r = i / width;
        const int k = (int)(i % width);
        y[i] = k < ca ? a[r * ca + k] : b[r * cb + (k - ca)];
    });
}

/* dst (P, cols) = beta*dst + columns [first, first + cols) of dy (P, width) */
static void gather_columns(float *dst, float beta, const float *dy, size_t p, int cols, int first,
                           int width) {
    launch_elementwise(p * cols, [=] __device__(size_t i) {
        dst[i] = blend(dst[i], beta, dy[i / cols * width + first + i % cols]);
    });
}

void cuda_concat_backward(float *da, float beta_a, float *db, float beta_b, const float *dy,
                          size_t p, int ca, int cb) {
    if (da) gather_columns(da, beta_a, dy, p, ca, 0, ca + cb);
    if (db) gather_columns(db, beta_b, dy, p, cb, ca, ca + cb);
}

/* diffusers' embedding (flip_sin_to_cos=False, downscale_freq_shift=1): the exponent in
 * float as PyTorch forms it, the frequency and t*f in double, as the CPU backend does. */
void cuda_timestep_embedding(float *y, const float *t, int n, int dim) {
    const int half = dim / 2;
    const float neg_log_period = (float)-log(10000.0);
    launch_elementwise((size_t)n * half, [=] __device__(size_t k) {
        const int s = (int)(k / half), i = (int)(k % half);
        const float exponent = (float)i * neg_log_period / (float)(half - 1);
        const double arg = (double)t[s] * exp((double)exponent);
        y[(size_t)s * dim + i] = (float)sin(arg);
        y[(size_t)s * dim + half + i] = (float)cos(arg);
    });
}

void cuda_embedding_forward(float *y, const int32_t *ids, const float *table, int n, int dim) {
    launch_elementwise((size_t)n * dim, [=] __device__(size_t k) {
        y[k] = table[(size_t)ids[k / dim] * dim + k % dim];
    });
}

/* One block per table row, its threads over the columns, each summing the samples that
 * select the row in sample order: deterministic without atomics, and the same float
 * additions in the same order as the CPU backend. */
__global__ void embedding_backward_kernel(float *dtable, const float *dy, const int32_t *ids,
                                          int n, int dim) {
    const int row = blockIdx.x;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) {
        float sum = 0.0f;
        for (int i = 0; i < n; i++)
            if (ids[i] == row) sum += dy[(size_t)i * dim + j];
        dtable[(size_t)row * dim + j] = sum;
    }
}

void cuda_embedding_backward(float *dtable, const float *dy, const int32_t *ids, int n, int rows,
                             int dim) {
    if (rows == 0 || dim == 0) return;
    const int threads = dim < 256 ? (dim + 31) / 32 * 32 : 256;
    embedding_backward_kernel<<<rows, threads, 0, cuda.stream>>>(dtable, dy, ids, n, dim);
    cudaCheckLaunch();
}
