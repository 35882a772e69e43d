/* Flow matching: time sampling, diffusers' sigma grid, the Euler and Heun samplers, and
 * the denoisers that convert between the velocity and DDPM's parameterisations (flow.h). */
#include "flow.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "util.h"

/* ---------------- time sampling ---------------- */

double flow_time_draw(int kind, double mean, double std, RngKey key, uint32_t sample) {
    if (kind == TIMESTEPS_LOGIT_NORMAL) {
        double z = philox_normal(key, sample, 0);
        return 1.0 / (1.0 + exp(-(mean + std * z)));
    }
    return philox_uniform(key, sample, 0);
}

/* ---------------- the sigma grid ---------------- */

double flow_shift_sigma(double sigma, double shift) {
    return shift * sigma / (1.0 + (shift - 1.0) * sigma);
}

void flow_sigma_grid(int steps, int num_train, double shift, double *sigmas) {
    /* diffusers keeps the shifted training sigmas and spans [sigma_max, sigma_min] of those
     * before shifting again: the end point 1/num_train is shifted twice. */
    double hi = flow_shift_sigma(1.0, shift), lo = flow_shift_sigma(1.0 / num_train, shift);
    for (int i = 0; i < steps; i++) {
        double sigma = steps > 1 ? hi + (lo - hi) * i / (steps - 1) : hi;
        sigmas[i] = flow_shift_sigma(sigma, shift);
    }
    sigmas[steps] = 0.0;
}

/* ---------------- the flow samplers ---------------- */

/* x <- x + dt * u, u a velocity (C channels per pixel). */
static void add_velocity(const Denoiser *den, float *x, const float *u, int n, double dt) {
    SampleUpdate step = {.x0_from_out = 1.0f, .coef_x0 = (float)dt, .coef_xt = 1.0f,
                         .channels = den->output.channels};
    den->be->sample_update(x, u, n, den->sample_size, step, (RngKey){0});
}

static float model_time(double sigma) { return (float)(FLOW_TIME_SCALE * sigma); }

static void flow_step(const SamplerPlan *plan, int i, Denoiser *den, float *x, int n,
                      RngKey z_key) {
    (void)z_key;
    const double sigma = plan->sigmas[i], next = plan->sigmas[i + 1], dt = next - sigma;
    const float *u = den->predict(den, x, n, model_time(sigma));
    int euler = !plan->heun || (plan->heun_last_euler && i == plan->count - 1);
    if (euler) {
        add_velocity(den, x, u, n, dt);
        return;
    }
    const Backend *be = den->be;
    size_t bytes = (size_t)n * den->sample_size * sizeof(float);
    float *u_first = plan->scratch, *x_euler = plan->scratch + (size_t)den->max_batch * den->sample_size;
    be->copy(u_first, u, bytes);
    be->copy(x_euler, x, bytes);
    add_velocity(den, x_euler, u_first, n, dt);
    const float *u_next = den->predict(den, x_euler, n, model_time(next));
    add_velocity(den, x, u_first, n, 0.5 * dt);
    add_velocity(den, x, u_next, n, 0.5 * dt);
}

int flow_plan_init(SamplerPlan *plan, const double *sigmas, int count, int heun,
                   int heun_last_euler, const Denoiser *den, char *err, size_t err_size) {
    memset(plan, 0, sizeof *plan);
    if (den->output.prediction != PRED_VELOCITY || den->output.learned_var) {
        snprintf(err, err_size, "euler and heun need a model that predicts the flow velocity "
                 "(objective=flow); this one predicts %s: sample it with ancestral or ddim, or "
                 "convert it (ddpm sample --convert)",
                 den->output.prediction == PRED_X0 ? "x0" : den->output.prediction == PRED_V ? "v" : "eps");
        return -1;
    }
    if (count < 1) {
        snprintf(err, err_size, "a flow sampler needs at least 1 step, got %d", count);
        return -1;
    }
    for (int i = 0; i < count; i++) {
        if (!(sigmas[i] > sigmas[i + 1]) || sigmas[i] > 1 || sigmas[i + 1] < 0) {
            snprintf(err, err_size, "the sigma grid must descend within [0, 1]: sigma %d = %g, "
                     "sigma %d = %g", i, sigmas[i], i + 1, sigmas[i + 1]);
            return -1;
        }
    }
    plan->count = count;
    plan->ascending = 1;
    plan->step = flow_step;
    plan->heun = heun;
    plan->heun_last_euler = heun_last_euler;
    plan->sigmas = xmalloc((size_t)(count + 1) * sizeof(double));
    memcpy(plan->sigmas, sigmas, (size_t)(count + 1) * sizeof(double));
    if (heun) {
        plan->scratch_be = den->be;
        plan->scratch = den->be->alloc(2 * (size_t)den->max_batch * den->sample_size * sizeof(float));
    }
    return 0;
}

int flow_plan_evaluations(const SamplerPlan *plan) {
    if (!plan->heun) return plan->count;
    return 2 * plan->count - (plan->heun_last_euler ? 1 : 0);
}

int flow_plan_from_options(SamplerPlan *plan, const SamplerOptions *opt, int num_train,
                           const Denoiser *den, char *err, size_t err_size) {
    memset(plan, 0, sizeof *plan);
    const char *spec = opt->spacing && *opt->spacing ? opt->spacing : "50";
    char *end;
    long steps = strtol(spec, &end, 10);
    if (*end || end == spec || steps < 1 || steps > 100000) {
        snprintf(err, err_size, "--steps '%s': euler and heun take a number of steps N >= 1 "
                 "(at most 100000)", spec);
        return -1;
    }
    double shift = opt->shift == 0 ? 1.0 : opt->shift;
    if (!(shift > 0) || !isfinite(shift)) {
        snprintf(err, err_size, "--shift %g: the shift must be a number > 0", opt->shift);
        return -1;
    }
    double *sigmas = xmalloc((size_t)(steps + 1) * sizeof(double));
    flow_sigma_grid((int)steps, num_train, shift, sigmas);
    int rc = flow_plan_init(plan, sigmas, (int)steps, opt->kind == SAMPLER_HEUN, 1, den, err,
                            err_size);
    free(sigmas);
    return rc;
}

void flow_sample_images(Net *net, const float *weights, int steps, int num_train, double shift,
                        int n, uint64_t seed, const int32_t *labels, float *out) {
    int channels = net_channels(net, net_input(net, "sample"));
    ModelOutput model = {.prediction = PRED_VELOCITY, .channels = channels};
    NetDenoiser den;
    net_denoiser_init(&den, net, weights, model);
    double *sigmas = xmalloc((size_t)(steps + 1) * sizeof(double));
    flow_sigma_grid(steps, num_train, shift, sigmas);
    SamplerPlan plan;
    char err[256];
    if (flow_plan_init(&plan, sigmas, steps, 0, 0, &den.base, err, sizeof err) != 0) die("%s", err);
    sample_images(&den.base, &plan, n, seed, NULL, labels, out, 0);
    sampler_plan_free(&plan);
    free(sigmas);
    net_denoiser_free(&den);
}

/* ---------------- matching the two paths ---------------- */

static double log_snr(double alpha_bar) { return log(alpha_bar / (1.0 - alpha_bar)); }

void flow_from_vp(double alpha_bar, double *sigma, double *scale) {
    double a = sqrt(alpha_bar), s = sqrt(1.0 - alpha_bar);
    *sigma = s / (a + s);
    *scale = 1.0 / (a + s);
}

void flow_vp_match(const GaussianDiffusion *process, double sigma, double *t_model,
                   double *alpha_bar, double *scale) {
    const double *ab = process->alphas_cumprod;
    const int T = process->num_timesteps;
    double norm2 = (1 - sigma) * (1 - sigma) + sigma * sigma;
    double want = (1 - sigma) * (1 - sigma) / norm2;   /* alpha_bar of equal SNR */
    if (want <= ab[T - 1]) {         /* noisier than the model ever saw: its last timestep */
        *t_model = T - 1;
        *alpha_bar = ab[T - 1];
        *scale = sqrt(1 - ab[T - 1]) / sigma;
        return;
    }
    if (want >= ab[0]) {             /* cleaner than its first timestep */
        *t_model = 0;
        *alpha_bar = ab[0];
        *scale = sqrt(ab[0]) / (1 - sigma);
        return;
    }
    double target = log_snr(want);
    int lo = 0, hi = T - 1;          /* log-SNR falls with t: find lsnr[lo] >= target > lsnr[hi] */
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (log_snr(ab[mid]) >= target) lo = mid;
        else hi = mid;
    }
    double a = log_snr(ab[lo]), b = log_snr(ab[hi]);
    *t_model = lo + (a - target) / (a - b);
    *alpha_bar = want;
    *scale = 1.0 / sqrt(norm2);
}

/* x0 = a x_vp + b out at alpha_bar, for each DDPM prediction type. */
static void x0_coefficients(PredictionType pred, double alpha_bar, double *a, double *b) {
    switch (pred) {
    case PRED_X0: *a = 0, *b = 1; break;
    case PRED_V: *a = sqrt(alpha_bar), *b = -sqrt(1 - alpha_bar); break;
    default: *a = 1 / sqrt(alpha_bar), *b = -sqrt(1 / alpha_bar - 1); break;
    }
}

/* dst <- coef_x * dst + coef_out * out (the first C channels of out's layout). */
static void affine_into(const Denoiser *inner, float *dst, const float *out, int n,
                        double coef_x, double coef_out) {
    SampleUpdate u = {.x0_from_out = 1.0f, .coef_x0 = (float)coef_out, .coef_xt = (float)coef_x,
                      .learned_var = inner->output.learned_var, .channels = inner->output.channels};
    inner->be->sample_update(dst, out, n, inner->sample_size, u, (RngKey){0});
}

static void scale_into(const Denoiser *den, float *dst, const float *x, int n, double scale) {
    den->be->copy(dst, x, (size_t)n * den->sample_size * sizeof(float));
    SampleUpdate u = {.coef_xt = (float)scale, .channels = den->output.channels};
    den->be->sample_update(dst, dst, n, den->sample_size, u, (RngKey){0});
}

static const float *velocity_from_ddpm_predict(Denoiser *self, const float *x, int n, float t) {
    VelocityFromDdpm *d = (VelocityFromDdpm *)self;
    double t_model, ab, c, a, b;
    flow_vp_match(d->process, t / FLOW_TIME_SCALE, &t_model, &ab, &c);
    x0_coefficients(d->inner->output.prediction, ab, &a, &b);
    scale_into(self, d->buf, x, n, c);
    d->inner->labels = self->labels;   /* a class-conditional inner model needs them */
    const float *out = d->inner->predict(d->inner, d->buf, n, (float)t_model);
    /* u = eps_hat - x0_hat with x0_hat = a x_vp + b out, eps_hat = (x_vp - sqrt(ab) x0_hat) /
     * sqrt(1 - ab) and x_vp = c x: linear in (x, out). */
    double ra = sqrt(ab), rs = sqrt(1 - ab);
    double coef_x = c * ((1 - ra * a) / rs - a), coef_out = -b * (ra / rs + 1);
    self->be->copy(d->buf, x, (size_t)n * self->sample_size * sizeof(float));
    affine_into(d->inner, d->buf, out, n, coef_x, coef_out);
    return d->buf;
}

static const float *eps_from_velocity_predict(Denoiser *self, const float *x, int n, float t) {
    EpsFromVelocity *d = (EpsFromVelocity *)self;
    const double *abs = d->process->alphas_cumprod;
    int lo = (int)floorf(t), T = d->process->num_timesteps;
    if (lo < 0) lo = 0;
    if (lo > T - 1) lo = T - 1;
    double frac = lo + 1 < T ? t - lo : 0, ab = abs[lo] + frac * (lo + 1 < T ? abs[lo + 1] - abs[lo] : 0);
    double sigma, k;
    flow_from_vp(ab, &sigma, &k);
    scale_into(self, d->buf, x, n, k);
    d->inner->labels = self->labels;
    const float *u = d->inner->predict(d->inner, d->buf, n, model_time(sigma));
    /* eps_hat = x_flow + (1 - sigma) u, x_flow = k x */
    self->be->copy(d->buf, x, (size_t)n * self->sample_size * sizeof(float));
    affine_into(d->inner, d->buf, u, n, k, 1 - sigma);
    return d->buf;
}

static Denoiser wrapper_base(const Denoiser *inner, PredictionType prediction,
                             const float *(*predict)(Denoiser *, const float *, int, float)) {
    Denoiser base = *inner;
    base.predict = predict;
    base.predict_at = NULL;   /* the wrapper's own predict must run */
    base.output = (ModelOutput){.prediction = prediction, .channels = inner->output.channels};
    return base;
}

void velocity_from_ddpm_init(VelocityFromDdpm *d, Denoiser *inner, const GaussianDiffusion *process) {
    if (inner->output.prediction == PRED_VELOCITY)
        die("internal: velocity_from_ddpm wraps a DDPM model, not a velocity model");
    *d = (VelocityFromDdpm){.base = wrapper_base(inner, PRED_VELOCITY, velocity_from_ddpm_predict),
                            .inner = inner, .process = process};
    d->buf = inner->be->alloc((size_t)inner->max_batch * inner->sample_size * sizeof(float));
}

void velocity_from_ddpm_free(VelocityFromDdpm *d) {
    d->inner->be->release(d->buf);
    d->buf = NULL;
}

void eps_from_velocity_init(EpsFromVelocity *d, Denoiser *inner, const GaussianDiffusion *process) {
    if (inner->output.prediction != PRED_VELOCITY)
        die("internal: eps_from_velocity wraps a velocity model");
    *d = (EpsFromVelocity){.base = wrapper_base(inner, PRED_EPS, eps_from_velocity_predict),
                           .inner = inner, .process = process};
    d->buf = inner->be->alloc((size_t)inner->max_batch * inner->sample_size * sizeof(float));
}

void eps_from_velocity_free(EpsFromVelocity *d) {
    d->inner->be->release(d->buf);
    d->buf = NULL;
}
