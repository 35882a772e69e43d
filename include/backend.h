/* The backend interface: every op the model, the trainer and the sampler use.
 *
 * The U-Net, the training step and the samplers are written once, against this
 * table. The CPU backend (src/cpu/) is the reference; the CUDA backend
 * (kernels/) implements the same table. All pointers to tensors are backend
 * memory (host memory on the CPU, device memory on CUDA).
 *
 * Conventions:
 *  - activations are NHWC, float32, contiguous: (N, H, W, C);
 *  - conv weights are (OC, KH, KW, IC); linear weights are (OUT, IN) as in PyTorch;
 *  - backward ops take `beta` for each input gradient: 0 overwrites it, 1 adds to
 *    it (a tensor read by several ops gets its gradient summed); parameter
 *    gradients are always overwritten, since each parameter is used once;
 *  - a NULL input gradient means it is not needed;
 *  - reductions are deterministic: no atomics in any backward.
 */
#ifndef DDPM_BACKEND_H
#define DDPM_BACKEND_H

#include <stddef.h>
#include <stdint.h>
#include "philox.h"

typedef struct {
    int n, h, w, c;                                 /* input (N, H, W, C) */
    int oc, kh, kw;                                 /* weight (OC, KH, KW, C) */
    int stride;
    int pad_top, pad_left, pad_bottom, pad_right;
    int oh, ow;                                     /* output (N, OH, OW, OC) */
    size_t workspace_bytes;                         /* set by conv2d_prepare */
    int algo[3];                                    /* backend's choice: fwd, bwd data, bwd filter */
} ConvShape;

/* Fills oh/ow from the rest; the backend's conv2d_prepare then sets the workspace. */
void conv_shape_finish(ConvShape *s);

/* How x0 is recovered from the model output in the sampling update:
 * x0 = a*x_t + b*model_out (eps: a=sqrt(1/ac), b=-sqrt(1/ac-1); x0: a=0, b=1; v: a=sqrt(ac), b=-sqrt(1-ac)). */
typedef struct {
    float x0_from_xt, x0_from_out;  /* a, b above */
    float coef_x0, coef_xt;         /* mean = coef_x0*x0 + coef_xt*x_t (posterior, or DDIM) */
    float sigma;                    /* standard deviation of the added noise (0 at t = 0) */
    int clip_x0;                    /* clamp x0 to [-1, 1] */
    /* Learned variances: the model output has 2C channels per pixel, [prediction (C) | v (C)].
     * With use_model_var the noise of each element is scaled by exp(lv/2) on top of sigma,
     * lv = post_logvar + frac*log_var_range, frac = (v+1)/2 (improved-diffusion's
     * frac*log(beta) + (1-frac)*log(beta~), with the range log(beta) - log(beta~) formed in
     * double: near t = T the two nearly coincide and a float difference loses it). */
    int learned_var, channels, use_model_var;
    float post_logvar, log_var_range;
} SampleUpdate;

/* Per-timestep float tables the loss op gathers by t (backend memory, (T) each). */
typedef struct {
    const float *x0_from_xt, *x0_from_out;   /* x0 = a[t]*x_t + b[t]*prediction, by prediction type */
    const float *coef1, *coef2;              /* posterior mean = coef1*x0 + coef2*x_t */
    const float *post_logvar;                /* posterior_log_variance_clipped */
    const float *log_var_range;              /* log(betas) - post_logvar: learned variances' range */
    const float *fixed_logvar;               /* the model's log variance when it is not learned */
} DiffusionTables;

typedef struct {
    int learned_var;       /* the output has 2C channels per pixel: [prediction (C) | v (C)] */
    int clip_x0;           /* clamp the predicted x0 to [-1, 1] (evaluation, as the papers do) */
    float mse_weight;      /* per-sample loss = mse_weight*mse + vb_weight*vb */
    float vb_weight;
    int vb_trains_mean;    /* 0 (hybrid): the VLB term's gradient reaches only v */
} LossSpec;

/* PRED_VELOCITY: flow matching's u = dx_t/dt = eps - x0 (flow.h); never a config value of
 * `prediction` and never seen by the DDPM ops: the DDPM samplers refuse it. */
typedef enum { PRED_EPS = 0, PRED_X0 = 1, PRED_V = 2, PRED_VELOCITY = 3 } PredictionType;

/* The optimizer's control state, in backend memory: one op (optimizer_control) advances it
 * each step from the device's gradient norm and per-sample losses, and adamw_state and
 * ema_update_state read their scalars from it, so the non-finite skip, clipping, warmup and
 * the bias corrections need no round trip through the host. The host reads a copy of it
 * (to_host_async) only to report and checkpoint. */
typedef struct {
    int64_t step;            /* the training step the next optimizer_control is for */
    int64_t adam_steps;      /* updates applied: Adam's t of the last update */
    int64_t skipped_steps;   /* steps skipped for a non-finite loss or gradient norm */
    double lr_reported;      /* the step's learning rate, from adam_steps before it (warmup) */
    float grad_norm;         /* the step's gradient norm, before clipping */
    float lr, grad_scale, bias_c1, bias_c2;   /* the step's AdamW scalars (skipped: unchanged) */
    int32_t skip;            /* the step is skipped: adamw_state and ema_update_state do nothing */
    int32_t faulted;         /* the step was made non-finite by the fault hook */
} OptimState;

/* optimizer_control's settings (by value; fixed for a run). */
typedef struct {
    double lr;               /* after warmup */
    int64_t warmup;          /* lr ramps as min(1, (adam_steps+1)/warmup) when warmup > 0 */
    double grad_clip;        /* clip the gradient's global norm to this when > 0 */
    double beta1, beta2;
    int64_t fault_step;      /* test hook: steps from this one are non-finite; -1: none */
    /* Where the per-sample losses lie: `blocks` blocks (ranks) `block_stride` floats apart,
     * each holding per-sample statistics as kinds of `per_kind` floats; the kinds whose bit
     * is set in loss_kinds make up the loss (a non-finite one makes it non-finite). */
    int blocks, per_kind;
    size_t block_stride;
    uint32_t loss_kinds;
} OptimControl;

/* BACKEND_OPS(X): every op of the table, X(return type, name, (parameters)), grouped as
 * memory, nn primitives, fused diffusion steps and optimizer. This one list declares the
 * Backend struct below, the prototypes of both backends (cpu_<name> in src/cpu/cpu_backend.h,
 * cuda_<name> in kernels/cuda_ops.cuh) and both tables (src/cpu/cpu_backend.c,
 * kernels/backend_cuda.cu), so an op a backend does not implement fails to link instead of
 * being a NULL entry. Each entry's comment is the op's contract; README "How to add an op". */
#define BACKEND_OPS(X)                                                                          \
    /* ---- memory: all allocation happens before the step loop ---- */                         \
    /* zeroed; aborts with a message on failure */                                              \
    X(void *, alloc, (size_t bytes))                                                            \
    X(void, release, (void *p))                                                                 \
    X(void, to_device, (void *dst, const void *src, size_t bytes))                              \
    X(void, to_host, (void *dst, const void *src, size_t bytes))                                \
    X(void, copy, (void *dst, const void *src, size_t bytes))                                   \
    X(void, fill, (float *x, float value, size_t n))                                            \
    /* x = the nearest bf16 value of x, in place (include/bf16.h's bf16_round): the            \
     * mixed-precision emulation's storage rounding of activations and their gradients */     \
    X(void, round_bf16, (float *x, size_t n))                                                   \
    X(void, synchronize, (void))                                                                \
    /* Page-locked host memory for to_host_async (zeroed); released with release_host */        \
    X(void *, alloc_host, (size_t bytes))                                                       \
    X(void, release_host, (void *p))                                                            \
    /* Queues a copy into host memory from alloc_host, after every op queued before it; the    \
     * bytes are there once wait_host_copies returns. Never waits itself. */                    \
    X(void, to_host_async, (void *dst, const void *src, size_t bytes))                          \
    /* Waits until every to_host_async queued so far has landed. */                             \
    X(void, wait_host_copies, (void))                                                           \
    /* Graph capture (CUDA graphs, only with DDPM_CUDA_GRAPHS=1): graph_begin returns NULL when \
     * the backend does not capture (the CPU always), and the caller runs its work directly;   \
     * otherwise the ops queued until graph_end are recorded, not run, and graph_end returns   \
     * the graph, which graph_launch queues as a whole and graph_release frees. The recorded   \
     * ops keep their arguments: only work whose per-run inputs sit in backend memory at fixed \
     * addresses can be replayed (docs/GPU.md). */                                              \
    X(void *, graph_begin, (void))                                                              \
    X(void *, graph_end, (void))                                                                \
    X(void, graph_launch, (void *graph))                                                        \
    X(void, graph_release, (void *graph))                                                       \
                                                                                                \
    /* ==== nn primitives ==== */                                                               \
    /* ---- convolution: x (N,H,W,C), w (OC,KH,KW,C), b (OC) or NULL, y (N,OH,OW,OC) ---- */    \
    /* chooses algorithms, sets workspace_bytes */                                              \
    X(void, conv2d_prepare, (ConvShape *s))                                                     \
    /* y = conv(x) + b + residual; residual (N,OH,OW,OC) or NULL, not y: a ResBlock's skip,  \
     * added where the output is written instead of by a separate add */                      \
    X(void, conv2d_forward, (const ConvShape *s, float *y, const float *x, const float *w,      \
                             const float *b, const float *residual, void *workspace))           \
    X(void, conv2d_backward, (const ConvShape *s, float *dx, float beta, float *dw, float *db,  \
                              const float *dy, const float *x, const float *w, void *workspace)) \
                                                                                                \
    /* ---- group norm over (HW, C/G) per (sample, group), optionally followed by SiLU ----     \
     * x, y (N, HW, C); gamma, beta (C); mean, rstd (N, G) saved for backward. With           \
     * dropout > 0 the output then goes through inverted dropout exactly as dropout_forward    \
     * with (dropout, dropout_key) (same mask, same float operations), and the backward       \
     * redraws that mask: one pass for a ResBlock's norm -> SiLU -> dropout. */                \
    X(void, groupnorm_forward, (float *y, float *mean, float *rstd, const float *x,             \
                                const float *gamma, const float *shift, int n, int hw, int c,   \
                                int groups, float eps, int fuse_silu, float dropout,            \
                                RngKey dropout_key))                                            \
    X(void, groupnorm_backward, (float *dx, float beta, float *dgamma, float *dshift,           \
                                 const float *dy, const float *x, const float *mean,            \
                                 const float *rstd, const float *gamma, const float *shift,     \
                                 int n, int hw, int c, int groups, int fuse_silu,               \
                                 float dropout, RngKey dropout_key))                            \
                                                                                                \
    /* ---- elementwise ---- */                                                                 \
    X(void, silu_forward, (float *y, const float *x, size_t n))                                 \
    X(void, silu_backward, (float *dx, float beta, const float *dy, const float *x, size_t n))  \
    X(void, add_forward, (float *y, const float *a, const float *b, size_t n))                  \
    /* dst = beta*dst + src: the backward of add and the identity */                            \
    X(void, accumulate, (float *dst, float beta, const float *src, size_t n))                   \
    /* y (N, HW, C) = x + (bias (N, C) + channel_bias (C)) broadcast over HW; channel_bias    \
     * NULL or a preceding conv's bias folded in here (its gradient: add_bias_backward of      \
     * dbias over the N rows) */                                                                \
    X(void, add_bias_forward, (float *y, const float *x, const float *bias,                     \
                               const float *channel_bias, int n, int hw, int c))                \
    /* dbias (N, C) = sum over HW of dy */                                                      \
    X(void, add_bias_backward, (float *dbias, float beta, const float *dy, int n, int hw,       \
                                int c))                                                         \
    /* y (N, C) = mean over HW of x (N, HW, C), summed in double (a classifier's pooling) */    \
    X(void, mean_pool_forward, (float *y, const float *x, int n, int hw, int c))                \
    /* dx (N, HW, C) = beta*dx + dy (N, C) / hw, broadcast over HW */                           \
    X(void, mean_pool_backward, (float *dx, float beta, const float *dy, int n, int hw, int c)) \
    /* inverted dropout with probability p; the mask is redrawn from key in backward.           \
     * Element e of sample s is kept when philox_uniform(key, s, e) >= p. */                    \
    X(void, dropout_forward, (float *y, const float *x, int n, size_t per_sample, float p,      \
                              RngKey key))                                                      \
    X(void, dropout_backward, (float *dx, float beta, const float *dy, int n,                   \
                               size_t per_sample, float p, RngKey key))                         \
                                                                                                \
    /* ---- layout ---- */                                                                      \
    /* nearest-neighbour x2: x (N,H,W,C) -> y (N,2H,2W,C) */                                    \
    X(void, upsample2x_forward, (float *y, const float *x, int n, int h, int w, int c))         \
    X(void, upsample2x_backward, (float *dx, float beta, const float *dy, int n, int h, int w,  \
                                  int c))                                                       \
    /* channel concat: a (P, CA), b (P, CB) -> y (P, CA+CB), P = N*H*W */                       \
    X(void, concat_forward, (float *y, const float *a, const float *b, size_t p, int ca,        \
                             int cb))                                                           \
    X(void, concat_backward, (float *da, float beta_a, float *db, float beta_b,                 \
                              const float *dy, size_t p, int ca, int cb))                       \
                                                                                                \
    /* ---- dense ---- */                                                                       \
    /* y (M, N) = x (M, K) w^T + b; w (N, K), b (N) or NULL */                                  \
    X(void, linear_forward, (float *y, const float *x, const float *w, const float *b, int m,   \
                             int k, int n))                                                     \
    X(void, linear_backward, (float *dx, float beta, float *dw, float *db, const float *dy,     \
                              const float *x, const float *w, int m, int k, int n))             \
    /* single-head attention per sample. qkv (B, L, 3C) rows [q | k | v];                       \
     * probs (B, L, L) = softmax(q k^T * scale) saved for backward; out (B, L, C) = probs v.    \
     * workspace: B*L*L floats. dqkv is overwritten. */                                         \
    X(void, attention_forward, (float *out, float *probs, const float *qkv, int b, int l,       \
                                int c, float scale))                                            \
    X(void, attention_backward, (float *dqkv, const float *dout, const float *qkv,              \
                                 const float *probs, int b, int l, int c, float scale,          \
                                 float *workspace))                                             \
                                                                                                \
    /* ---- embeddings ---- */                                                                  \
    /* sinusoidal embedding of timesteps t (N) -> y (N, dim): [sin(t f_i), cos(t f_i)],         \
     * f_i = exp(-ln(10000) i / (dim/2 - 1)) (diffusers, freq_shift 1). t is float so that     \
     * continuous times (flow matching's 1000*sigma) embed too; integer t as int32 did. */      \
    X(void, timestep_embedding, (float *y, const float *t, int n, int dim))                     \
    /* row gather: y (N, dim) row i = table (rows, dim) row ids[i]; ids (N) int32 backend       \
     * memory, each in [0, rows): the class-label embedding. */                                 \
    X(void, embedding_forward, (float *y, const int32_t *ids, const float *table, int n,        \
                                int dim))                                                       \
    /* dtable (rows, dim) row r = sum of dy (N, dim) rows i with ids[i] = r, in order of i      \
     * (deterministic, no atomics); overwritten, rows no id selects are 0. */                   \
    X(void, embedding_backward, (float *dtable, const float *dy, const int32_t *ids, int n,     \
                                 int rows, int dim))                                            \
                                                                                                \
    /* ==== fused diffusion steps ==== */                                                       \
    /* From uint8 images (N, H, W, C): flip horizontally where philox_uniform(flip_key, s, 0)   \
     * < 0.5 (if flip), scale to [-1, 1] as x0 = u8/127.5 - 1, draw eps =                       \
     * philox_normal(eps_key, s, e), and write x_t = sqrt_ac[t]*x0 + sqrt_1m_ac[t]*eps and the  \
     * training target for `pred` (eps, x0, or v = sqrt_ac*eps - sqrt_1m_ac*x0), and x0 itself  \
     * when x0 is not NULL. t (N) and the tables (T) are backend memory. */                     \
    X(void, q_sample_images, (float *x_t, float *target, float *x0, const uint8_t *images,      \
                              const int32_t *t, const float *sqrt_ac, const float *sqrt_1m_ac,  \
                              int n, int h, int w, int c, PredictionType pred, int flip,        \
                              RngKey flip_key, RngKey eps_key))                                 \
    /* The same from float data x0 (N, D) (cached latents): no flip, no scaling; eps =          \
     * philox_normal(eps_key, s, e), x_t = sqrt_ac[t]*x0 + sqrt_1m_ac[t]*eps, and the target. */ \
    X(void, q_sample, (float *x_t, float *target, const float *x0, const int32_t *t,            \
                       const float *sqrt_ac, const float *sqrt_1m_ac, int n, size_t d,          \
                       PredictionType pred, RngKey eps_key))                                    \
    /* loss_per_sample (N) = mean over D of (pred - target)^2;                                  \
     * dpred = 2 (pred - target) / (N*D), the gradient of the batch mean. */                    \
    X(void, mse_loss, (float *loss_per_sample, float *dpred, const float *pred,                 \
                       const float *target, int n, size_t d))                                   \
    /* Softmax cross-entropy of n samples over `classes` logits (N, classes):               \
     * loss[s] = logsumexp(logits[s]) - logits[s][labels[s]], formed in double; correct[s]    \
     * (or NULL) = 1 when labels[s] is the first maximum of logits[s], else 0; dlogits (or     \
     * NULL) = grad_scale * (softmax(logits[s]) - onehot(labels[s])): 1/N for the batch mean,  \
     * -1 for the gradient of sum_s log p(labels[s] | x) that classifier guidance follows. */  \
    X(void, cross_entropy, (float *loss, float *correct, float *dlogits, const float *logits,   \
                            const int32_t *labels, int n, int classes, float grad_scale))       \
    /* The DDPM losses, fused. For each sample s at timestep t[s], over its D = HW*C elements:  \
     *   mse[s] = mean of (prediction - target)^2;                                              \
     *   vb[s]  = L_t in bits/dim: the decoder NLL -log p(x0|x1) (discretized, 256 bins) at     \
     *            t = 0, else KL(q(x_{t-1}|x_t,x0) || p(x_{t-1}|x_t)); mean over D, / ln 2.     \
     * p's mean comes from the prediction through x0, its variance from v (learned) or the      \
     * fixed table. dout (N, HW, C or 2C), when not NULL, is overwritten with the gradient of   \
     * (1/N) sum_s weight[s] * (mse_weight*mse[s] + vb_weight*vb[s]) (weight NULL: all 1).      \
     * mse or vb may be NULL; vb is then neither reported nor differentiated. */                \
    X(void, diffusion_loss, (float *mse, float *vb, float *dout, const float *out,              \
                             const float *target, const float *x0, const float *x_t,            \
                             const int32_t *t, const float *weight, int n, int hw, int c,       \
                             LossSpec spec, DiffusionTables tables))                            \
    /* one reverse step for all N samples at one t: x0 = a*x + b*out, optional clip,           \
     * x <- coef_x0*x0 + coef_xt*x + sigma*philox_normal(z_key, s, e). d = HW*C. */             \
    /* The sampling loop's step from backend memory: sample_update with u = table[*step] and   \
     * z_key.step = *step, so a captured loop needs no parameters from the host */              \
    X(void, sample_update_indexed, (float *x, const float *model_out, int n, size_t d,          \
                                    const SampleUpdate *table, const int32_t *step,             \
                                    RngKey z_key))                                              \
    /* y[0..n) = table[*step]: the model's time input at the loop's step */                     \
    X(void, fill_indexed, (float *y, size_t n, const float *table, const int32_t *step))        \
    /* *step += delta: the sampling loop's step counter */                                      \
    X(void, advance_step, (int32_t *step, int delta))                                           \
    X(void, sample_update, (float *x, const float *model_out, int n, size_t d, SampleUpdate u,  \
                            RngKey z_key))                                                      \
    /* x (N, D) = philox_normal(key, s, e) */                                                   \
    X(void, normal_fill, (float *x, int n, size_t d, RngKey key))                               \
    /* classifier-free guidance: pair (2N, P, C_out) holds the conditional outputs (samples     \
     * 0..N-1), then the unconditional ones; C_out = c, or 2c with learned variances. out      \
     * (N, P, C_out): the first c channels fmaf(scale, cond, (1-scale)*uncond), the rest       \
     * (the variances' v) cond's. P = pixels per sample. */                                     \
    X(void, guidance_combine, (float *out, const float *pair, int n, size_t pixels, int c,      \
                               int learned_var, float scale))                                   \
                                                                                                \
    /* ==== the KL autoencoder (latent diffusion's first stage) ==== */                          \
    /* Its posterior is a diagonal Gaussian: moments (N, HW, 2C) hold per pixel                 \
     * [mean (C) | logvar (C)], as diffusers' DiagonalGaussianDistribution chunks them; logvar   \
     * is clamped to [-30, 20] first, and where the clamp is active its gradient is 0           \
     * (torch.clamp: the bounds themselves pass it). */                                         \
    /* z (N, HW, C) = mean + exp(logvar/2) * noise (N, HW, C) */                                \
    X(void, gaussian_sample_forward, (float *z, const float *moments, const float *noise,       \
                                      int n, int hw, int c))                                    \
    /* dmoments = beta*dmoments + [dz | dz * noise * exp(logvar/2) / 2] */                      \
    X(void, gaussian_sample_backward, (float *dmoments, float beta, const float *dz,            \
                                       const float *moments, const float *noise, int n, int hw, \
                                       int c))                                                  \
    /* kl (N) = KL(posterior || N(0, I)) = 0.5 * sum over HW*C of (mean^2 + exp(logvar) - 1 -   \
     * logvar), summed in double; dmoments (N, HW, 2C), when not NULL, is overwritten with the  \
     * gradient of weight * (1/N) sum_s kl[s]. */                                               \
    X(void, gaussian_kl, (float *kl, float *dmoments, const float *moments, int n, int hw,      \
                          int c, float weight))                                                 \
    /* The reconstruction term per sample: r = |out - target| (l1) or (out - target)^2, summed  \
     * over D in double; with a learned log variance lv (one float, or logvar NULL: 0)          \
     * loss[s] = sum r / exp(lv) + D*lv (a Laplace/Gaussian NLL up to constants). dout (N, D)   \
     * and dlogvar (one float), when not NULL, are overwritten with the gradient of             \
     * (1/N) sum_s loss[s]; |x|' at 0 is 0. */                                                  \
    X(void, recon_loss, (float *loss, float *dout, float *dlogvar, const float *out,            \
                         const float *target, const float *logvar, int n, size_t d, int l1))    \
                                                                                                \
    /* ==== optimizer over flat buffers ==== */                                                 \
    /* *out = sqrt(sum of g^2), written to backend memory (one float) */                        \
    X(void, global_norm, (float *out, const float *g, size_t n))                                \
    /* AdamW, PyTorch semantics: p -= lr*wd*p; m,v moments; p -= lr * mhat / (sqrt(vhat) + eps).\
     * The gradient is scaled by grad_scale first (clipping). bias_c1 = 1-b1^t,                 \
     * bias_c2 = 1-b2^t. p_bf16 (or NULL): receives bf16_round of the updated p in the same   \
     * pass, the compute weights of mixed precision. */                                         \
    X(void, adamw, (float *p, float *p_bf16, const float *g, float *m, float *v, size_t n,      \
                    float lr, float b1, float b2, float eps, float wd, float bias_c1,           \
                    float bias_c2, float grad_scale))                                           \
    /* ema = decay*ema + (1-decay)*p */                                                         \
    X(void, ema_update, (float *ema, const float *p, size_t n, float decay))                    \
    /* One step of the optimizer's control state (one thread's work). With step = state->step:\
     * skip = (fault_step >= 0 && step >= fault_step) || grad_norm or a loss statistic is not  \
     * finite; lr_reported = lr * min(1, (adam_steps+1)/warmup) in double (lr without warmup);  \
     * if skipped, skipped_steps++; otherwise adam_steps++ and, for t = adam_steps, the floats \
     * lr = (float)lr_reported, grad_scale = min(1, grad_clip/(norm + 1e-6)) (1 without clip), \
     * bias_c1 = 1-beta1^t, bias_c2 = 1-beta2^t, each formed in double as adamw_step does.     \
     * Then step++. grad_norm is one float of backend memory. */                               \
    X(void, optimizer_control, (OptimState *state, const float *grad_norm, const float *stats, \
                                OptimControl control))                                          \
    /* adamw with state's lr, bias_c1, bias_c2 and grad_scale; when state->skip p, m and v   \
     * stay. p_bf16 (or NULL) gets bf16_round(p) either way, so it always mirrors p. */       \
    X(void, adamw_state, (float *p, float *p_bf16, const float *g, float *m, float *v,          \
                          size_t n, const OptimState *state, float b1, float b2, float eps,     \
                          float wd))                                                            \
    /* ema_update, nothing when state->skip */                                                  \
    X(void, ema_update_state, (float *ema, const float *p, size_t n, const OptimState *state,   \
                               float decay))

/* The table: one function pointer per op of BACKEND_OPS, called as be->op(...). */
#define BACKEND_FIELD(ret, op, params) ret(*op) params;
typedef struct Backend {
    const char *name;
    BACKEND_OPS(BACKEND_FIELD)
} Backend;
#undef BACKEND_FIELD

const Backend *backend_cpu(void);
const Backend *backend_cuda(void);   /* NULL when built without CUDA or no GPU present */

#endif
