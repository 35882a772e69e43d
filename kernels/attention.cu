/* Single-head self-attention per sample on cuBLAS strided-batched GEMMs.
 *
 * qkv (B, L, 3C) holds rows [q | k | v]; q, k and v are strided views of it (row
 * stride 3C, sample stride 3LC) handed to cuBLAS as they are, no copies:
 *   forward:  probs (B, L, L) = softmax(q k^T * scale);  out (B, L, C) = probs v
 *   backward: dv = probs^T dout;  dprobs = dout v^T;
 *             dscores = probs * (dprobs - <dprobs, probs>_row)   (in the workspace)
 *             dq = dscores k * scale;  dk = dscores^T q * scale
 * The softmax passes use one warp per row; their row sums are in double and in a
 * fixed order (warp_sum), matching the CPU backend's. */
#include "cuda_ops.cuh"

enum { ROWS_PER_BLOCK = THREADS / 32 };

/* In place over rows of length n: p = exp(s - max s) / sum. */
__global__ void softmax_rows_kernel(float *p, size_t rows, int n) {
    const size_t row = (size_t)blockIdx.x * ROWS_PER_BLOCK + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= rows) return;   /* the whole warp leaves together */
    float *r = p + row * n;
    float max = -INFINITY;
    for (int j = lane; j < n; j += 32) max = fmaxf(max, r[j]);
    max = warp_max(max);
    double sum = 0;
    for (int j = lane; j < n; j += 32) {
        const float e = expf(r[j] - max);
        r[j] = e;
        sum += e;
    }
    const float inv = (float)(1.0 / warp_sum(sum));
    for (int j = lane; j < n; j += 32) r[j] *= inv;
}

/* In place over rows: dprobs -> dscores = p * (dprobs - <dprobs, p>). */
__global__ void softmax_backward_rows_kernel(float *d, const float *p, size_t rows, int n) {
    const size_t row = (size_t)blockIdx.x * ROWS_PER_BLOCK + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= rows) return;
    float *drow = d + row * n;
    const float *prow = p + row * n;
    double dot = 0;
    for (int j = lane; j < n; j += 32) dot += (double)drow[j] * prow[j];
    const float dot_f = (float)warp_sum(dot);
    for (int j = lane; j < n; j += 32) drow[j] = prow[j] * (drow[j] - dot_f);
}

static unsigned row_blocks(size_t rows) {
    return (unsigned)((rows + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK);
}

void cuda_attention_forward(float *out, float *probs, const float *qkv, int b, int l, int c,
                            float scale) {
    const int ld = 3 * c;
    const long long qkv_stride = (long long)l * ld, probs_stride = (long long)l * l;
    const float *q = qkv, *k = qkv + c, *v = qkv + 2 * c;
    gemm_row_major(false, true, l, l, c, scale, q, ld, qkv_stride, k, ld, qkv_stride, 0.0f, probs,
                   l, probs_stride, b);
    const size_t rows = (size_t)b * l;
    softmax_rows_kernel<<<row_blocks(rows), THREADS, 0, cuda.stream>>>(probs, rows, l);
    cudaCheckLaunch();
    gemm_row_major(false, false, l, c, l, 1.0f, probs, l, probs_stride, v, ld, qkv_stride, 0.0f,
                   out, c, (long long)l * c, b);
}

void cuda_attention_backward(float *dqkv, const float *dout, const float *qkv,
                             const float *probs, int b, int l, int c, float scale,
                             float *workspace) {
    const int ld = 3 * c;
    const long long qkv_stride = (long long)l * ld, probs_stride = (long long)l * l;
    const long long out_stride = (long long)l * c;
    const float *q = qkv, *k = qkv + c, *v = qkv + 2 * c;
    float *dq = dqkv, *dk = dqkv + c, *dv = dqkv + 2 * c;
    float *dscores = workspace;   /* (B, L, L): dprobs, then dscores in place */
    gemm_row_major(true, false, l, c, l, 1.0f, probs, l, probs_stride, dout, c, out_stride, 0.0f,
                   dv, ld, qkv_stride, b);
    gemm_row_major(false, true, l, l, c, 1.0f, dout, c, out_stride, v, ld, qkv_stride, 0.0f,
                   dscores, l, probs_stride, b);
    const size_t rows = (size_t)b * l;
    softmax_backward_rows_kernel<<<row_blocks(rows), THREADS, 0, cuda.stream>>>(dscores, probs,
                                                                                rows, l);
    cudaCheckLaunch();
    gemm_row_major(false, false, l, c, l, scale, dscores, l, probs_stride, k, ld, qkv_stride, 0.0f,
                   dq, ld, qkv_stride, b);
    gemm_row_major(true, false, l, c, l, scale, dscores, l, probs_stride, q, ld, qkv_stride, 0.0f,
                   dk, ld, qkv_stride, b);
}
