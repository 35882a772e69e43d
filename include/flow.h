/* Flow matching (rectified flow), in diffusers' and Stable Diffusion 3's convention:
 *
 *   x_t = (1 - t) x0 + t eps,   t in [0, 1], t = 1 is pure noise;
 *   the network predicts the velocity u = dx_t/dt = eps - x0 (PRED_VELOCITY);
 *   its time input is 1000 t as a float, so the DDPM U-Net's sinusoidal embedding keeps
 *   its range and orientation (noise at the top, as DDPM's t = 999).
 *
 * The other convention (torchcfm, facebookresearch/flow_matching) runs time the other way:
 * x_s = (1 - s) eps + s x0 with s = 1 - t, and velocity x0 - eps = -u.
 *
 * Conversions on one point (x, t) of the linear path, with x0_hat and eps_hat the
 * predictions that reproduce x (x = (1 - t) x0_hat + t eps_hat):
 *   x0_hat = x - t u,   eps_hat = x + (1 - t) u,   u = eps_hat - x0_hat,
 * so the errors obey |x0_hat - x0| = t |u_hat - u| and |eps_hat - eps| = (1 - t) |u_hat - u|.
 * The variance-preserving path x_vp = sqrt(ab) x0 + sqrt(1 - ab) eps has the same
 * signal-to-noise ratio as the linear path at t = sqrt(1 - ab) / (sqrt(ab) + sqrt(1 - ab)),
 * where x = x_vp / (sqrt(ab) + sqrt(1 - ab)). The denoisers below use this to run a DDPM
 * model (eps, x0 or diffusers' v = sqrt(ab) eps - sqrt(1 - ab) x0) under the flow samplers,
 * and a flow model under DDIM or the ancestral sampler. */
#ifndef DDPM_FLOW_H
#define DDPM_FLOW_H

#include <stddef.h>
#include <stdint.h>

#include "denoiser.h"
#include "diffusion.h"
#include "philox.h"
#include "sample.h"

/* The network's time input for flow time t. */
#define FLOW_TIME_SCALE 1000.0

/* ---------------- time sampling (training) ---------------- */

/* Flow time of training sample `sample` under key: uniform on (0, 1) for TIMESTEPS_UNIFORM,
 * sigmoid(mean + std z) for TIMESTEPS_LOGIT_NORMAL (z = philox_normal(key, sample, 0)). */
double flow_time_draw(int kind, double mean, double std, RngKey key, uint32_t sample);

/* ---------------- the sigma grid (sampling) ---------------- */

/* shift s: s sigma / (1 + (s - 1) sigma). */
double flow_shift_sigma(double sigma, double shift);
/* diffusers' FlowMatchEulerDiscreteScheduler(num_train_timesteps, shift).set_timesteps(steps):
 * steps sigmas evenly spaced from 1 to the shifted 1/num_train, each shifted, then a final 0
 * (steps + 1 values; diffusers shifts the end point twice, and so does this). */
void flow_sigma_grid(int steps, int num_train, double shift, double *sigmas);

/* ---------------- the flow samplers ---------------- */

/* Euler or Heun from sigmas[0] down to sigmas[count] over `count` steps, on a denoiser that
 * predicts PRED_VELOCITY at time FLOW_TIME_SCALE * sigma. Heun averages the velocity at sigma
 * and at the next sigma (2 evaluations per step); heun_last_euler makes the last step an
 * Euler step (diffusers' FlowMatchHeunDiscreteScheduler: 2 count - 1 evaluations). The
 * plan keeps scratch for den's batches. Returns 0, or -1 with err (a model that does not
 * predict the velocity, a grid that does not descend). */
int flow_plan_init(SamplerPlan *plan, const double *sigmas, int count, int heun,
                   int heun_last_euler, const Denoiser *den, char *err, size_t err_size);
/* Model evaluations a plan makes per image batch. */
int flow_plan_evaluations(const SamplerPlan *plan);

/* The plan for --sampler euler|heun --steps N --shift s (diffusers' grid over num_train;
 * Heun's last step is Euler, as in diffusers). */
int flow_plan_from_options(SamplerPlan *plan, const SamplerOptions *opt, int num_train,
                           const Denoiser *den, char *err, size_t err_size);

/* Training-time grids: Euler over flow_sigma_grid(steps, num_train, shift); labels (n) host,
 * or NULL for an unconditional network. */
void flow_sample_images(Net *net, const float *weights, int steps, int num_train, double shift,
                        int n, uint64_t seed, const int32_t *labels, float *out);

/* ---------------- conversions through the denoiser ---------------- */

/* A DDPM model (eps, x0 or v; learned variances allowed) on `process` seen as a velocity
 * model: predict(x, n, 1000 t) scales x to the VP point of equal signal-to-noise ratio,
 * calls the model at the matching continuous timestep (interpolated in log-SNR), and returns
 * eps_hat - x0_hat. Beyond the process's noisiest timestep the model runs at T - 1. */
typedef struct {
    Denoiser base;
    Denoiser *inner;
    const GaussianDiffusion *process;
    float *buf;            /* (max_batch, D) backend */
} VelocityFromDdpm;

/* A flow (velocity) model seen as an eps model on the VP `process`: predict(x, n, t) at an
 * integer timestep t of process returns eps_hat, so DDIM and the ancestral sampler run it. */
typedef struct {
    Denoiser base;
    Denoiser *inner;
    const GaussianDiffusion *process;
    float *buf;            /* (max_batch, D) backend */
} EpsFromVelocity;

void velocity_from_ddpm_init(VelocityFromDdpm *d, Denoiser *inner, const GaussianDiffusion *process);
void velocity_from_ddpm_free(VelocityFromDdpm *d);
void eps_from_velocity_init(EpsFromVelocity *d, Denoiser *inner, const GaussianDiffusion *process);
void eps_from_velocity_free(EpsFromVelocity *d);

/* The VP timestep (continuous, log-SNR interpolated, clamped to [0, T-1]) whose
 * signal-to-noise ratio equals flow time sigma's, and the input scale c with x_vp = c x. */
void flow_vp_match(const GaussianDiffusion *process, double sigma, double *t_model,
                   double *alpha_bar, double *scale);
/* The flow time of VP alpha_bar, and the scale k with x = k x_vp. */
void flow_from_vp(double alpha_bar, double *sigma, double *scale);

#endif
