/* The CPU backend's ops: the reference implementation of every op in backend.h.
 * Each function has the semantics documented for the Backend field of the same
 * name (without the cpu_ prefix). src/cpu_backend.c assembles the table. */
#ifndef DDPM_CPU_BACKEND_H
#define DDPM_CPU_BACKEND_H

#include "backend.h"

/* src/cpu_conv.c: im2col + OpenBLAS SGEMM, NHWC */
void cpu_conv2d_prepare(ConvShape *s);
void cpu_conv2d_forward(const ConvShape *s, float *y, const float *x, const float *w,
                        const float *b, void *workspace);
void cpu_conv2d_backward(const ConvShape *s, float *dx, float beta, float *dw, float *db,
                         const float *dy, const float *x, const float *w, void *workspace);

/* src/cpu_dense.c: OpenBLAS SGEMM */
/* sums (cols) = column sums of m (rows, cols), in double, deterministic: the bias gradients */
void cpu_column_sums(float *sums, const float *m, size_t rows, int cols);
void cpu_linear_forward(float *y, const float *x, const float *w, const float *b, int m, int k,
                        int n);
void cpu_linear_backward(float *dx, float beta, float *dw, float *db, const float *dy,
                         const float *x, const float *w, int m, int k, int n);
void cpu_attention_forward(float *out, float *probs, const float *qkv, int b, int l, int c,
                           float scale);
void cpu_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *probs,
                            int b, int l, int c, float scale, float *workspace);

/* src/cpu_norm.c */
void cpu_groupnorm_forward(float *y, float *mean, float *rstd, const float *x, const float *gamma,
                           const float *shift, int n, int hw, int c, int groups, float eps,
                           int fuse_silu);
void cpu_groupnorm_backward(float *dx, float beta, float *dgamma, float *dshift, const float *dy,
                            const float *x, const float *mean, const float *rstd,
                            const float *gamma, const float *shift, int n, int hw, int c,
                            int groups, int fuse_silu);

/* src/cpu_pointwise.c */
void cpu_silu_forward(float *y, const float *x, size_t n);
void cpu_silu_backward(float *dx, float beta, const float *dy, const float *x, size_t n);
void cpu_add_forward(float *y, const float *a, const float *b, size_t n);
void cpu_accumulate(float *dst, float beta, const float *src, size_t n);
void cpu_add_bias_forward(float *y, const float *x, const float *bias, int n, int hw, int c);
void cpu_add_bias_backward(float *dbias, float beta, const float *dy, int n, int hw, int c);
void cpu_dropout_forward(float *y, const float *x, int n, size_t per_sample, float p, RngKey key);
void cpu_dropout_backward(float *dx, float beta, const float *dy, int n, size_t per_sample,
                          float p, RngKey key);
void cpu_upsample2x_forward(float *y, const float *x, int n, int h, int w, int c);
void cpu_upsample2x_backward(float *dx, float beta, const float *dy, int n, int h, int w, int c);
void cpu_concat_forward(float *y, const float *a, const float *b, size_t p, int ca, int cb);
void cpu_concat_backward(float *da, float beta_a, float *db, float beta_b, const float *dy,
                         size_t p, int ca, int cb);
void cpu_timestep_embedding(float *y, const int32_t *t, int n, int dim);

/* src/cpu_diffusion_ops.c */
void cpu_q_sample_images(float *x_t, float *target, float *x0, const uint8_t *images,
                         const int32_t *t,
                         const float *sqrt_ac, const float *sqrt_1m_ac, int n, int h, int w,
                         int c, PredictionType pred, int flip, RngKey flip_key, RngKey eps_key);
void cpu_mse_loss(float *loss_per_sample, float *dpred, const float *pred, const float *target,
                  int n, size_t d);
void cpu_sample_update(float *x, const float *model_out, int n, size_t d, SampleUpdate u,
                       RngKey z_key);
void cpu_normal_fill(float *x, int n, size_t d, RngKey key);

/* src/cpu_loss.c */
void cpu_diffusion_loss(float *mse, float *vb, float *dout, const float *out, const float *target,
                        const float *x0, const float *x_t, const int32_t *t, const float *weight,
                        int n, int hw, int c, LossSpec spec, DiffusionTables tables);

/* src/cpu_optim.c */
void cpu_global_norm(float *out, const float *g, size_t n);
void cpu_adamw(float *p, const float *g, float *m, float *v, size_t n, float lr, float b1,
               float b2, float eps, float wd, float bias_c1, float bias_c2, float grad_scale);
void cpu_ema_update(float *ema, const float *p, size_t n, float decay);

#endif
