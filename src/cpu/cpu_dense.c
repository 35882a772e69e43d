/* Dense ops on the CPU: linear layers on cpu_gemm (oneDNN's matmul, or OpenBLAS's SGEMM)
 * and single-head attention on OpenBLAS's SGEMM.
 *
 * Linear:    y (M, N) = x (M, K) w^T + b, w (N, K) as in PyTorch.
 * Attention: per sample, q, k, v are strided views of qkv (L, 3C) with leading
 *            dimension 3C, handed to SGEMM as they are (no copies):
 *              probs = softmax(q k^T * scale),  out = probs v.
 * Linear layers run one GEMM over the whole batch; attention runs its samples in parallel
 * (below). Every reduction has a fixed order.
 */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "cpu_backend.h"
#include "cpu_gemm.h"
#include "cpu_math.h"

/* ---- linear ---- */

/* sums (cols) = the column sums of m (rows, cols); src/cpu_conv.c uses it for conv biases.
 * Threads own disjoint column blocks and sum rows in order, in double: deterministic. */
void cpu_column_sums(float *sums, const float *m, size_t rows, int cols) {
    enum { BLOCK = 16 };   /* one cache line of floats */
    const int blocks = (cols + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < blocks; blk++) {
        const int c0 = blk * BLOCK, width = cols - c0 < BLOCK ? cols - c0 : BLOCK;
        double acc[BLOCK] = {0};
        for (size_t r = 0; r < rows; r++) {
            const float *row = m + r * (size_t)cols + c0;
            for (int j = 0; j < width; j++) acc[j] += row[j];
        }
        for (int j = 0; j < width; j++) sums[c0 + j] = (float)acc[j];
    }
}

static void broadcast_rows(float *y, const float *row, int m, int n) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < m; i++) memcpy(y + (size_t)i * n, row, (size_t)n * sizeof(float));
}

/* y = residual + bias row by row: the seed the GEMM accumulates onto. */
static void residual_plus_rows(float *y, const float *residual, const float *row, int m, int n) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < m; i++) {
        const float *r = residual + (size_t)i * n;
        float *out = y + (size_t)i * n;
        if (row)
            for (int j = 0; j < n; j++) out[j] = r[j] + row[j];
        else
            memcpy(out, r, (size_t)n * sizeof(float));
    }
}

void cpu_linear_forward_residual(float *y, const float *x, const float *w, const float *b,
                                 const float *residual, int m, int k, int n) {
    /* Seeding y with the bias (and residual) lets the GEMM add them for free (beta = 1). */
    if (residual) residual_plus_rows(y, residual, b, m, n);
    else if (b) broadcast_rows(y, b, m, n);
    cpu_gemm(&(GemmCall){.m = m, .n = n, .k = k, .trans_b = 1, .lda = k, .ldb = k, .ldc = n,
                         .alpha = 1.0f, .beta = b || residual ? 1.0f : 0.0f},
             x, w, y);
}

void cpu_linear_forward(float *y, const float *x, const float *w, const float *b, int m, int k,
                        int n) {
    cpu_linear_forward_residual(y, x, w, b, NULL, m, k, n);
}

void cpu_linear_backward(float *dx, float beta, float *dw, float *db, const float *dy,
                         const float *x, const float *w, int m, int k, int n) {
    /* dx (M, K) = dy (M, N) w (N, K); the GEMM's beta is exactly our beta (0 ignores dx). */
    if (dx)
        cpu_gemm(&(GemmCall){.m = m, .n = k, .k = n, .lda = n, .ldb = k, .ldc = k, .alpha = 1.0f,
                             .beta = beta},
                 dy, w, dx);
    /* dw (N, K) = dy^T (N, M) x (M, K) */
    cpu_gemm(&(GemmCall){.m = n, .n = k, .k = m, .trans_a = 1, .lda = n, .ldb = k, .ldc = k,
                         .alpha = 1.0f},
             dy, x, dw);
    if (db) cpu_column_sums(db, dy, (size_t)m, n);
}

/* ---- attention ----
 * On OpenBLAS in every build. oneDNN's batched matmul over the strided q, k and v views
 * corrupted the heap (docs/RELIABILITY.md), and its per-sample 2-D calls made the training
 * step's GEMMs slower than this (docs/PERF.md). A sample's GEMMs (L x L x C) are too small
 * to split well over threads: OpenBLAS wakes its threads for each one, and the scores leave
 * the cache between the GEMMs and the softmax. When the batch has a sample for every
 * thread, the samples run in parallel instead, one per thread from start to end; OpenBLAS
 * runs single-threaded inside an OpenMP parallel region. Otherwise (sampling one image) the
 * GEMMs take the threads, one sample at a time. Either way every row's sums have one fixed
 * order. */

/* In place over one row of length n: p = exp(s - max s) / sum. The exponentials are
 * vectorised (cpu_math.h; libm's expf is a scalar call, which took a tenth of a sampling
 * step), then summed in order in double. */
static void softmax_row(float *row, int n) {
    float max = row[0];
    for (int j = 1; j < n; j++) max = row[j] > max ? row[j] : max;
    for (int j = 0; j < n; j++) row[j] = exp_saturating(row[j] - max);
    double sum = 0;
    for (int j = 0; j < n; j++) sum += row[j];
    const float inv = (float)(1.0 / sum);
    for (int j = 0; j < n; j++) row[j] *= inv;
}

/* In place over one row: dprobs -> dscores = p * (dprobs - <dprobs, p>), the softmax backward. */
static void softmax_backward_row(float *drow, const float *prow, int n) {
    double dot = 0;
    for (int j = 0; j < n; j++) dot += (double)drow[j] * prow[j];
    for (int j = 0; j < n; j++) drow[j] = prow[j] * (drow[j] - (float)dot);
}

static int samples_in_parallel(int b) { return b >= omp_get_max_threads(); }

typedef struct {
    int l, c, ld;   /* positions, channels, qkv's row length 3C */
    float scale;
} AttentionDims;

/* One sample: probs (L, L) = softmax(q k^T * scale), out (L, C) = probs v. rows_threaded:
 * the softmax rows spread over the threads (when the samples do not). */
static void attention_sample_forward(float *out, float *probs, const float *qkv,
                                     AttentionDims d, int rows_threaded) {
    const float *q = qkv, *k = q + d.c, *v = q + 2 * d.c;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, d.l, d.l, d.c, d.scale, q, d.ld, k, d.ld,
                0.0f, probs, d.l);
#pragma omp parallel for schedule(static) if (rows_threaded)
    for (int r = 0; r < d.l; r++) softmax_row(probs + (size_t)r * d.l, d.l);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d.l, d.c, d.l, 1.0f, probs, d.l, v,
                d.ld, 0.0f, out, d.c);
}

void cpu_attention_forward(float *out, float *probs, const float *qkv, int b, int l, int c,
                           float scale) {
    const AttentionDims d = {l, c, 3 * c, scale};
    const size_t qkv_stride = (size_t)l * d.ld, probs_stride = (size_t)l * l;
    const int parallel = samples_in_parallel(b);
#pragma omp parallel for schedule(static) if (parallel)
    for (int s = 0; s < b; s++)
        attention_sample_forward(out + s * (size_t)l * c, probs + s * probs_stride,
                                 qkv + s * qkv_stride, d, !parallel);
}

/* One sample's dqkv (L, 3C) from dout (L, C); dscores (L, L) is its scratch. */
static void attention_sample_backward(float *dqkv, const float *dout, const float *qkv,
                                      const float *probs, float *dscores, AttentionDims d,
                                      int rows_threaded) {
    const float *q = qkv, *k = q + d.c, *v = q + 2 * d.c;
    float *dq = dqkv, *dk = dq + d.c, *dv = dq + 2 * d.c;
    /* dv (L, C) = probs^T (L, L) dout (L, C);  dprobs (L, L) = dout (L, C) v^T */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d.l, d.c, d.l, 1.0f, probs, d.l, dout,
                d.c, 0.0f, dv, d.ld);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, d.l, d.l, d.c, 1.0f, dout, d.c, v, d.ld,
                0.0f, dscores, d.l);
#pragma omp parallel for schedule(static) if (rows_threaded)
    for (int r = 0; r < d.l; r++)
        softmax_backward_row(dscores + (size_t)r * d.l, probs + (size_t)r * d.l, d.l);
    /* dq (L, C) = dscores (L, L) k * scale;  dk (L, C) = dscores^T q * scale */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d.l, d.c, d.l, d.scale, dscores, d.l,
                k, d.ld, 0.0f, dq, d.ld);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d.l, d.c, d.l, d.scale, dscores, d.l, q,
                d.ld, 0.0f, dk, d.ld);
}

void cpu_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *probs,
                            int b, int l, int c, float scale, float *workspace) {
    const AttentionDims d = {l, c, 3 * c, scale};
    const size_t qkv_stride = (size_t)l * d.ld, probs_stride = (size_t)l * l;
    const int parallel = samples_in_parallel(b);
#pragma omp parallel for schedule(static) if (parallel)
    for (int s = 0; s < b; s++)
        attention_sample_backward(dqkv + s * qkv_stride, dout + s * (size_t)l * c,
                                  qkv + s * qkv_stride, probs + s * probs_stride,
                                  workspace + s * probs_stride, d, !parallel);
}
