/* Dense ops on the CPU: linear layers and single-head attention, on cpu_gemm (oneDNN's
 * matmul, or OpenBLAS's SGEMM).
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
 * On oneDNN (cpu_gemm.h), each of the GEMMs is one call over the samples (a strided batch).
 * On OpenBLAS, a sample's GEMMs (L x L x C) are too small to split well over threads: it
 * wakes its threads for each one, and the scores leave the cache between the GEMMs and the
 * softmax. When the batch has a sample for every thread, the samples run in parallel
 * instead, one per thread from start to end; OpenBLAS runs single-threaded inside an OpenMP
 * parallel region. Otherwise (sampling one image) the GEMMs take the threads, one sample at
 * a time. Either way every row's sums have one fixed order. */

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

/* The batched path: each GEMM once over all samples (a strided batch), the softmax over all
 * rows; the GEMM library spreads the batch over the threads. */
static void softmax_all_rows(float *p, size_t rows, int n) {
#pragma omp parallel for schedule(static)
    for (size_t r = 0; r < rows; r++) softmax_row(p + r * (size_t)n, n);
}

static void softmax_backward_all_rows(float *d, const float *p, size_t rows, int n) {
#pragma omp parallel for schedule(static)
    for (size_t r = 0; r < rows; r++) softmax_backward_row(d + r * (size_t)n, p + r * (size_t)n, n);
}

/* (L, L) or (L, C) products of each sample: A (lda) and B (ldb) with their batch strides. */
static GemmCall attention_gemm(int b, int m, int n, int k, int trans_a, int trans_b, int lda,
                               size_t stride_a, int ldb, size_t stride_b, int ldc,
                               size_t stride_c, float alpha) {
    return (GemmCall){.batch = b, .m = m, .n = n, .k = k, .trans_a = trans_a,
                      .trans_b = trans_b, .lda = lda, .ldb = ldb, .ldc = ldc,
                      .stride_a = stride_a, .stride_b = stride_b, .stride_c = stride_c,
                      .alpha = alpha};
}

static void attention_forward_batched(float *out, float *probs, const float *qkv, int b,
                                      AttentionDims d) {
    const size_t qkv_stride = (size_t)d.l * d.ld, probs_stride = (size_t)d.l * d.l;
    const size_t out_stride = (size_t)d.l * d.c;
    const float *q = qkv, *k = qkv + d.c, *v = qkv + 2 * d.c;
    GemmCall scores = attention_gemm(b, d.l, d.l, d.c, 0, 1, d.ld, qkv_stride, d.ld, qkv_stride,
                                     d.l, probs_stride, d.scale);
    cpu_gemm(&scores, q, k, probs);
    softmax_all_rows(probs, (size_t)b * d.l, d.l);
    GemmCall mix = attention_gemm(b, d.l, d.c, d.l, 0, 0, d.l, probs_stride, d.ld, qkv_stride,
                                  d.c, out_stride, 1.0f);
    cpu_gemm(&mix, probs, v, out);
}

static void attention_backward_batched(float *dqkv, const float *dout, const float *qkv,
                                       const float *probs, float *dscores, int b,
                                       AttentionDims d) {
    const size_t qkv_stride = (size_t)d.l * d.ld, probs_stride = (size_t)d.l * d.l;
    const size_t out_stride = (size_t)d.l * d.c;
    const float *q = qkv, *k = qkv + d.c, *v = qkv + 2 * d.c;
    float *dq = dqkv, *dk = dqkv + d.c, *dv = dqkv + 2 * d.c;
    /* dv = probs^T dout;  dprobs = dout v^T */
    GemmCall g = attention_gemm(b, d.l, d.c, d.l, 1, 0, d.l, probs_stride, d.c, out_stride, d.ld,
                                qkv_stride, 1.0f);
    cpu_gemm(&g, probs, dout, dv);
    g = attention_gemm(b, d.l, d.l, d.c, 0, 1, d.c, out_stride, d.ld, qkv_stride, d.l,
                       probs_stride, 1.0f);
    cpu_gemm(&g, dout, v, dscores);
    softmax_backward_all_rows(dscores, probs, (size_t)b * d.l, d.l);
    /* dq = dscores k * scale;  dk = dscores^T q * scale */
    g = attention_gemm(b, d.l, d.c, d.l, 0, 0, d.l, probs_stride, d.ld, qkv_stride, d.ld,
                       qkv_stride, d.scale);
    cpu_gemm(&g, dscores, k, dq);
    g = attention_gemm(b, d.l, d.c, d.l, 1, 0, d.l, probs_stride, d.ld, qkv_stride, d.ld,
                       qkv_stride, d.scale);
    cpu_gemm(&g, dscores, q, dk);
}

void cpu_attention_forward(float *out, float *probs, const float *qkv, int b, int l, int c,
                           float scale) {
    const AttentionDims d = {l, c, 3 * c, scale};
    if (cpu_gemm_path() == GEMM_PATH_ONEDNN) {
        attention_forward_batched(out, probs, qkv, b, d);
        return;
    }
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
    if (cpu_gemm_path() == GEMM_PATH_ONEDNN) {
        attention_backward_batched(dqkv, dout, qkv, probs, workspace, b, d);
        return;
    }
    const size_t qkv_stride = (size_t)l * d.ld, probs_stride = (size_t)l * l;
    const int parallel = samples_in_parallel(b);
#pragma omp parallel for schedule(static) if (parallel)
    for (int s = 0; s < b; s++)
        attention_sample_backward(dqkv + s * qkv_stride, dout + s * (size_t)l * c,
                                  qkv + s * qkv_stride, probs + s * probs_stride,
                                  workspace + s * probs_stride, d, !parallel);
}
