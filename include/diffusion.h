/* The Gaussian diffusion process (Ho et al. 2020), with improved-diffusion's names.
 * All per-timestep arrays are double precision on the host; the backend gets float
 * copies of the two it gathers per sample (sqrt_alphas_cumprod, sqrt_one_minus_...). */
#ifndef DDPM_DIFFUSION_H
#define DDPM_DIFFUSION_H

#include <stddef.h>
#include "backend.h"
#include "config.h"

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
    int *timestep_map;        /* (T) respaced: the model's timestep for each step; NULL: t */
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
/* x0 = a*x_t + b*model_out for the process's prediction type. */
void xstart_coefficients(const GaussianDiffusion *d, int t, double *a, double *b);
/* The model's (log) variance at t for the fixed variance types. */
double model_log_variance(const GaussianDiffusion *d, int t);

/* Coefficients of one ancestral step x_t -> x_{t-1} for the fused backend update. */
SampleUpdate p_sample_update(const GaussianDiffusion *d, int t, int clip_denoised);
/* One DDIM step x_t -> x_{t-1} with noise eta (Song et al. 2021, eq. 12); eta = 1 with
 * every step is the ancestral sampler with the posterior variance. */
SampleUpdate ddim_sample_update(const GaussianDiffusion *d, int t, double eta, int clip_denoised);
/* One deterministic DDIM inversion step x_t -> x_{t+1} (the model is evaluated at t). */
SampleUpdate ddim_reverse_update(const GaussianDiffusion *d, int t);
/* The model timestep of step t (differs from t after respacing). */
int model_timestep(const GaussianDiffusion *d, int t);

/* The prior term L_T in bits/dim for one image x0 of n values:
 * KL(q(x_T|x0) || N(0, I)), averaged over the values, / ln 2. */
double prior_bpd(const GaussianDiffusion *d, const float *x0, size_t n);

/* Respacing (improved-diffusion's space_timesteps): which of T timesteps to keep for
 * "N" (N evenly spread), "ddimN" (a stride giving exactly N), or "a,b,c" (counts per
 * equal section). Fills keep (ascending, T entries at most) and returns the count, or -1
 * with err filled. */
int space_timesteps(int num_timesteps, const char *spec, int *keep, char *err, size_t err_size);
/* A process over the kept timesteps only: betas recomputed from the kept alphas_cumprod,
 * timestep_map pointing at the base process's timesteps. */
void diffusion_respace(GaussianDiffusion *out, const GaussianDiffusion *base, const int *keep,
                       int count);

/* The process a config describes (beta_schedule, timesteps, prediction, variance). */
int diffusion_from_config(GaussianDiffusion *d, const Config *cfg, char *err, size_t err_size);

/* Float copies of the per-timestep arrays the backend gathers by t, in backend memory. */
typedef struct {
    const Backend *be;
    float *sqrt_ac, *sqrt_1m_ac;   /* for q_sample_images */
    DiffusionTables tables;        /* for diffusion_loss (views of owned arrays) */
    float *owned[7];
} DeviceSchedule;

void device_schedule_init(DeviceSchedule *s, const Backend *be, const GaussianDiffusion *d);
void device_schedule_free(DeviceSchedule *s);

#endif
