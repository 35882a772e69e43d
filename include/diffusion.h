/* The Gaussian diffusion process (Ho et al. 2020), with improved-diffusion's names.
 * All per-timestep arrays are double precision on the host; the backend gets float
 * copies of the two it gathers per sample (sqrt_alphas_cumprod, sqrt_one_minus_...). */
#ifndef DDPM_DIFFUSION_H
#define DDPM_DIFFUSION_H

#include <stddef.h>
#include "backend.h"

typedef enum { VAR_FIXED_SMALL = 0, VAR_FIXED_LARGE = 1 } VarianceType;

/* The arrays, in the order `ddpm schedule` prints them. */
#define DIFFUSION_ARRAYS(X)                \
    X(betas)                               \
    X(alphas_cumprod)                      \
    X(alphas_cumprod_prev)                 \
    X(alphas_cumprod_next)                 \
    X(sqrt_alphas_cumprod)                 \
    X(sqrt_one_minus_alphas_cumprod)       \
    X(log_one_minus_alphas_cumprod)        \
    X(sqrt_recip_alphas_cumprod)           \
    X(sqrt_recipm1_alphas_cumprod)         \
    X(posterior_variance)                  \
    X(posterior_log_variance_clipped)      \
    X(posterior_mean_coef1)                \
    X(posterior_mean_coef2)

typedef struct {
    int num_timesteps;
    PredictionType pred;
    VarianceType variance;
#define DECLARE_ARRAY(name) double *name; /* (T) */
    DIFFUSION_ARRAYS(DECLARE_ARRAY)
#undef DECLARE_ARRAY
} GaussianDiffusion;

/* Fills betas (T) for a named schedule: linear | cosine | quadratic | sigmoid.
 * Returns 0, or -1 for an unknown name. */
int get_named_beta_schedule(const char *name, int num_timesteps, double *betas);
/* Returns 0, or -1 with err filled (unknown schedule, betas outside (0, 1]). */
int diffusion_init(GaussianDiffusion *d, const char *schedule, int num_timesteps,
                   PredictionType pred, VarianceType variance, char *err, size_t err_size);
void diffusion_free(GaussianDiffusion *d);
const char *const *diffusion_array_names(int *count);
const double *diffusion_array(const GaussianDiffusion *d, int index);

/* Host reference math on one flat tensor of n values, all at timestep t. */
void q_sample(const GaussianDiffusion *d, const float *x_start, int t, const float *noise,
              float *x_t, size_t n);
void q_posterior_mean_variance(const GaussianDiffusion *d, const float *x_start, const float *x_t,
                               int t, float *mean, double *variance, double *log_variance,
                               size_t n);
void predict_xstart_from_eps(const GaussianDiffusion *d, const float *x_t, int t,
                             const float *eps, float *x_start, size_t n);
void predict_eps_from_xstart(const GaussianDiffusion *d, const float *x_t, int t,
                             const float *x_start, float *eps, size_t n);
/* The reverse-process Gaussian for model output `out`: mean, (log) variance and x0. */
void p_mean_variance(const GaussianDiffusion *d, const float *model_out, const float *x_t, int t,
                     int clip_denoised, float *mean, double *variance, double *log_variance,
                     float *pred_xstart, size_t n);
/* The model's (log) variance at t for the fixed variance types. */
double model_log_variance(const GaussianDiffusion *d, int t);

/* Coefficients of one ancestral step x_t -> x_{t-1} for the fused backend update. */
SampleUpdate p_sample_update(const GaussianDiffusion *d, int t, int clip_denoised);

PredictionType prediction_from_name(const char *name);   /* eps | x0 | v; -1 if unknown */
VarianceType variance_from_name(const char *name);       /* fixedsmall | fixedlarge; -1 */

#endif
