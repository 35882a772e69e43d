/* Dense ops on the CPU: linear layers and single-head attention, on OpenBLAS SGEMM.
 *
 * Linear:    y (M, N) = x (M, K) w^T + b, w (N, K) as in PyTorch.
 * Attention: per sample, q, k, v are strided views of qkv (L, 3C) with leading
 *            dimension 3C, handed to SGEMM as they are (no copies):
 *              probs = softmax(q k^T * scale),  out = probs v.
 * Both run the GEMMs over whole tensors and do the small elementwise passes
 * (softmax, its backward, bias sums) with OpenMP. Every reduction has a fixed
 * order, so results do not depend on the thread count.
 */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "cpu_backend.h"

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
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, x, k, w, k,
                b || residual ? 1.0f : 0.0f, y, n);
}

void cpu_linear_forward(float *y, const float *x, const float *w, const float *b, int m, int k,
                        int n) {
    cpu_linear_forward_residual(y, x, w, b, NULL, m, k, n);
}

void cpu_linear_backward(float *dx, float beta, float *dw, float *db, const float *dy,
                         const float *x, const float *w, int m, int k, int n) {
    /* dx (M, K) = dy (M, N) w (N, K); SGEMM's beta is exactly our beta (0 ignores dx). */
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, k, n, 1.0f, dy, n, w, k, beta,
                    dx, k);
    /* dw (N, K) = dy^T (N, M) x (M, K) */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, k, m, 1.0f, dy, n, x, k, 0.0f, dw, k);
    if (db) cpu_column_sums(db, dy, (size_t)m, n);
}

/* ---- attention ---- */

/* In place over rows of length n: p = exp(s - max s) / sum. */
static void softmax_rows(float *p, size_t rows, int n) {
#pragma omp parallel for schedule(static)
    for (size_t r = 0; r < rows; r++) {
        float *row = p + r * (size_t)n;
        float max = row[0];
        for (int j = 1; j < n; j++) max = row[j] > max ? row[j] : max;
        double sum = 0;
        for (int j = 0; j < n; j++) {
            row[j] = expf(row[j] - max);
            sum += row[j];
        }
        const float inv = (float)(1.0 / sum);
        for (int j = 0; j < n; j++) row[j] *= inv;
    }
}

/* In place over rows: dprobs -> dscores = p * (dprobs - <dprobs, p>), the softmax backward. */
static void softmax_backward_rows(float *d, const float *p, size_t rows, int n) {
#pragma omp parallel for schedule(static)
    for (size_t r = 0; r < rows; r++) {
        float *drow = d + r * (size_t)n;
        const float *prow = p + r * (size_t)n;
        double dot = 0;
        for (int j = 0; j < n; j++) dot += (double)drow[j] * prow[j];
        for (int j = 0; j < n; j++) drow[j] = prow[j] * (drow[j] - (float)dot);
    }
}

/* The GEMM loops run over samples one at a time with OpenBLAS's own threads inside;
 * the softmax passes sit between them and cover the whole batch at once. */
void cpu_attention_forward(float *out, float *probs, const float *qkv, int b, int l, int c,
                           float scale) {
    const int ld = 3 * c;
    const size_t qkv_stride = (size_t)l * ld, probs_stride = (size_t)l * l;
    for (int s = 0; s < b; s++) {
        const float *q = qkv + s * qkv_stride, *k = q + c;
        /* scores (L, L) = q k^T * scale */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, l, l, c, scale, q, ld, k, ld, 0.0f,
                    probs + s * probs_stride, l);
    }
    softmax_rows(probs, (size_t)b * l, l);
    for (int s = 0; s < b; s++) {
        const float *v = qkv + s * qkv_stride + 2 * c;
        /* out (L, C) = probs (L, L) v (L, C) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, l, c, l, 1.0f,
                    probs + s * probs_stride, l, v, ld, 0.0f, out + s * (size_t)l * c, c);
    }
}

void cpu_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *probs,
                            int b, int l, int c, float scale, float *workspace) {
    const int ld = 3 * c;
    const size_t qkv_stride = (size_t)l * ld, probs_stride = (size_t)l * l;
    float *dscores = workspace;   /* (B, L, L): first dprobs, then dscores in place */
    for (int s = 0; s < b; s++) {
        const float *p = probs + s * probs_stride, *v = qkv + s * qkv_stride + 2 * c;
        const float *dy = dout + s * (size_t)l * c;
        float *dv = dqkv + s * qkv_stride + 2 * c;
        /* dv (L, C) = probs^T (L, L) dout (L, C) */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, l, c, l, 1.0f, p, l, dy, c, 0.0f, dv,
                    ld);
        /* dprobs (L, L) = dout (L, C) v^T */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, l, l, c, 1.0f, dy, c, v, ld, 0.0f,
                    dscores + s * probs_stride, l);
    }
    softmax_backward_rows(dscores, probs, (size_t)b * l, l);
    for (int s = 0; s < b; s++) {
        const float *ds = dscores + s * probs_stride;
        const float *q = qkv + s * qkv_stride, *k = q + c;
        float *dq = dqkv + s * qkv_stride, *dk = dq + c;
        /* dq (L, C) = dscores (L, L) k * scale;  dk (L, C) = dscores^T q * scale */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, l, c, l, scale, ds, l, k, ld, 0.0f,
                    dq, ld);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, l, c, l, scale, ds, l, q, ld, 0.0f,
                    dk, ld);
    }
}
