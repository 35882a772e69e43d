/* Linear layers on cuBLAS, and the row-major GEMM wrapper attention uses too.
 *
 * Our matrices are row-major; cuBLAS is column-major. A row-major (R, C) matrix with
 * row stride ld is, to cuBLAS, its transpose: a column-major (C, R) matrix with
 * leading dimension ld. So row-major C = op(A) op(B) is computed as the column-major
 * C^T = op(B)^T op(A)^T: the operands swap places, each keeps its transpose flag.
 *
 *   forward:  y (M, N)  = x (M, K) w^T + b     (y seeded with b, then GEMM beta 1)
 *   backward: dx (M, K) = dy (M, N) w (N, K)   (GEMM beta = the op's beta)
 *             dw (N, K) = dy^T x
 *             db (N)    = column sums of dy     (column_sums.cuh, deterministic)
 * cuBLAS does not read C when beta is 0. */
#include "column_sums.cuh"
#include "cuda_ops.cuh"

void gemm_row_major(bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                    const float *a, int lda, long long stride_a, const float *b, int ldb,
                    long long stride_b, float beta, float *c, int ldc, long long stride_c,
                    int batch) {
    const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    if (batch == 1)
        cublasCheck(cublasSgemm(cuda.cublas, op_b, op_a, n, m, k, &alpha, b, ldb, a, lda, &beta,
                                c, ldc));
    else
        cublasCheck(cublasSgemmStridedBatched(cuda.cublas, op_b, op_a, n, m, k, &alpha, b, ldb,
                                              stride_b, a, lda, stride_a, &beta, c, ldc, stride_c,
                                              batch));
}

void cuda_linear_forward(float *y, const float *x, const float *w, const float *b, int m, int k,
                         int n) {
    if (b) cuda_broadcast_rows(y, b, (size_t)m, n);
    gemm_row_major(false, true, m, n, k, 1.0f, x, k, 0, w, k, 0, b ? 1.0f : 0.0f, y, n, 0, 1);
}

void cuda_linear_backward(float *dx, float beta, float *dw, float *db, const float *dy,
                          const float *x, const float *w, int m, int k, int n) {
    if (dx) gemm_row_major(false, false, m, k, n, 1.0f, dy, n, 0, w, k, 0, beta, dx, k, 0, 1);
    gemm_row_major(true, false, n, k, m, 1.0f, dy, n, 0, x, k, 0, 0.0f, dw, k, 0, 1);
    if (db) column_sums_into(db, 0.0f, dy, 1, m, n);
}
