/* The CUDA backend's ops. Each cuda_X has the semantics of the Backend field X in
 * include/backend.h, on device memory, queued on cuda.stream; kernels/backend_cuda.cu
 * assembles the table. Also the few helpers one file offers another. */
#ifndef DDPM_CUDA_OPS_CUH
#define DDPM_CUDA_OPS_CUH

#include "cuda_common.cuh"

/* kernels/conv_cudnn.cu: cuDNN, NHWC */
void cuda_conv2d_prepare(ConvShape *s);
void cuda_conv2d_forward(const ConvShape *s, float *y, const float *x, const float *w,
                         const float *b, void *workspace);
void cuda_conv2d_backward(const ConvShape *s, float *dx, float beta, float *dw, float *db,
                          const float *dy, const float *x, const float *w, void *workspace);

/* kernels/groupnorm.cu */
void cuda_groupnorm_forward(float *y, float *mean, float *rstd, const float *x,
                            const float *gamma, const float *shift, int n, int hw, int c,
                            int groups, float eps, int fuse_silu);
void cuda_groupnorm_backward(float *dx, float beta, float *dgamma, float *dshift,
                             const float *dy, const float *x, const float *mean,
                             const float *rstd, const float *gamma, const float *shift, int n,
                             int hw, int c, int groups, int fuse_silu);

/* kernels/pointwise.cu */
void cuda_fill(float *x, float value, size_t n);
/* y (rows, cols) = bias (cols) in every row: seeds a GEMM or convolution run with beta 1 */
void cuda_broadcast_rows(float *y, const float *bias, size_t rows, int cols);
void cuda_silu_forward(float *y, const float *x, size_t n);
void cuda_silu_backward(float *dx, float beta, const float *dy, const float *x, size_t n);
void cuda_add_forward(float *y, const float *a, const float *b, size_t n);
void cuda_accumulate(float *dst, float beta, const float *src, size_t n);
void cuda_add_bias_forward(float *y, const float *x, const float *bias, int n, int hw, int c);
void cuda_add_bias_backward(float *dbias, float beta, const float *dy, int n, int hw, int c);
void cuda_dropout_forward(float *y, const float *x, int n, size_t per_sample, float p,
                          RngKey key);
void cuda_dropout_backward(float *dx, float beta, const float *dy, int n, size_t per_sample,
                           float p, RngKey key);
void cuda_upsample2x_forward(float *y, const float *x, int n, int h, int w, int c);
void cuda_upsample2x_backward(float *dx, float beta, const float *dy, int n, int h, int w, int c);
void cuda_concat_forward(float *y, const float *a, const float *b, size_t p, int ca, int cb);
void cuda_concat_backward(float *da, float beta_a, float *db, float beta_b, const float *dy,
                          size_t p, int ca, int cb);
void cuda_timestep_embedding(float *y, const int32_t *t, int n, int dim);

/* kernels/linear.cu: cuBLAS */
/* Row-major C (M, N) = alpha op(A) op(B) + beta C for `batch` matrices `stride_*` floats
 * apart, where op(A) is (M, K) and op(B) is (K, N); lda, ldb, ldc are row strides. */
void gemm_row_major(bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                    const float *a, int lda, long long stride_a, const float *b, int ldb,
                    long long stride_b, float beta, float *c, int ldc, long long stride_c,
                    int batch);
void cuda_linear_forward(float *y, const float *x, const float *w, const float *b, int m, int k,
                         int n);
void cuda_linear_backward(float *dx, float beta, float *dw, float *db, const float *dy,
                          const float *x, const float *w, int m, int k, int n);

/* kernels/attention.cu */
void cuda_attention_forward(float *out, float *probs, const float *qkv, int b, int l, int c,
                            float scale);
void cuda_attention_backward(float *dqkv, const float *dout, const float *qkv,
                             const float *probs, int b, int l, int c, float scale,
                             float *workspace);

/* kernels/diffusion_ops.cu */
void cuda_q_sample_images(float *x_t, float *target, float *x0_out, const uint8_t *images,
                          const int32_t *t, const float *sqrt_ac, const float *sqrt_1m_ac, int n,
                          int h, int w, int c, PredictionType pred, int flip, RngKey flip_key,
                          RngKey eps_key);
void cuda_mse_loss(float *loss_per_sample, float *dpred, const float *pred, const float *target,
                   int n, size_t d);
void cuda_sample_update(float *x, const float *model_out, int n, size_t d, SampleUpdate u,
                        RngKey z_key);
void cuda_normal_fill(float *x, int n, size_t d, RngKey key);

/* kernels/diffusion_loss.cu */
void cuda_diffusion_loss(float *mse, float *vb, float *dout, const float *out,
                         const float *target, const float *x0, const float *x_t,
                         const int32_t *t, const float *weight, int n, int hw, int c,
                         LossSpec spec, DiffusionTables tables);

/* kernels/optim.cu */
void cuda_global_norm(float *out, const float *g, size_t n);
void cuda_adamw(float *p, const float *g, float *m, float *v, size_t n, float lr, float b1,
                float b2, float eps, float wd, float bias_c1, float bias_c2, float grad_scale);
void cuda_ema_update(float *ema, const float *p, size_t n, float decay);

#endif
