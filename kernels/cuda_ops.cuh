/* The CUDA backend's ops. Each cuda_<op> has the semantics of the op's entry in
 * BACKEND_OPS (include/backend.h), on device memory, queued on cuda.stream; the
 * prototypes are generated from that list, and kernels/backend_cuda.cu assembles the
 * table from it. Where they live:
 *   memory ops (fill: pointwise.cu), alloc_host, to_host_async, graph_*
 *                                       kernels/backend_cuda.cu
 *   conv2d_*                            kernels/conv_cudnn.cu (cuDNN, NHWC)
 *   groupnorm_*                         kernels/groupnorm.cu
 *   elementwise, layout, timestep_embedding, embedding_*   kernels/pointwise.cu
 *   linear_*                            kernels/linear.cu (cuBLAS)
 *   attention_*                         kernels/attention.cu
 *   q_sample_images, mse_loss, sample_update(_indexed), fill_indexed, advance_step,
 *   normal_fill                         kernels/diffusion_ops.cu
 *   diffusion_loss, cross_entropy       kernels/diffusion_loss.cu
 *   global_norm, adamw, ema_update, optimizer_control, adamw_state, ema_update_state
 *                                       kernels/optim.cu
 *   gaussian_sample_*, gaussian_kl, recon_loss   kernels/vae_ops.cu
 * Also the few helpers one file offers another. */
#ifndef DDPM_CUDA_OPS_CUH
#define DDPM_CUDA_OPS_CUH

#include "cuda_common.cuh"

#define CUDA_OP_PROTOTYPE(ret, op, params) ret cuda_##op params;
BACKEND_OPS(CUDA_OP_PROTOTYPE)
#undef CUDA_OP_PROTOTYPE

/* kernels/pointwise.cu: y (rows, cols) = bias (cols) in every row: seeds a GEMM or
 * convolution run with beta 1 */
void cuda_broadcast_rows(float *y, const float *bias, size_t rows, int cols);

/* kernels/linear.cu: row-major C (M, N) = alpha op(A) op(B) + beta C for `batch` matrices
 * `stride_*` floats apart, where op(A) is (M, K) and op(B) is (K, N); lda, ldb, ldc are
 * row strides. */
void gemm_row_major(bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                    const float *a, int lda, long long stride_a, const float *b, int ldb,
                    long long stride_b, float beta, float *c, int ldc, long long stride_c,
                    int batch);

#endif
