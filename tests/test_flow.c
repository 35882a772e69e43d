/* Flow matching (flow.h, objective_flow.c) against exact answers:
 *  - the sigma grid equals diffusers' set_timesteps(28) with shift 3 (tests/ref fixture,
 *    written by tools/make_flow_grid.py);
 *  - the objective's x_t and velocity target are exact for the drawn (x0, eps, t), and with
 *    conv_out zeroed the first loss is 1 + mean(x0^2) within its standard error;
 *  - Euler and Heun on data N(1, 0.5^2) with the exact velocity: the output law after N
 *    steps (every step is affine in x) matches the table, the mean is exact, the
 *    orders are 1 and 2, and sampled noise lands on the propagated law;
 *  - a mixture at +-1 with its closed-form velocity: W1 to the target falls with the steps;
 *  - a rectified-flow Euler step is a DDIM (eta = 0) step on the matched VP path, both ways
 *    through the conversion denoisers, and the conversions of eps, x0 and v models give
 *    the velocity; the error identities between eps, x0 and velocity hold;
 *  - logit-normal times pass a Kolmogorov-Smirnov test (and uniform ones fail it);
 *  - the samplers refuse a model of the other kind, a shift <= 0 and N < 1. */
#include <stdlib.h>
#include <string.h>

#include "cpu_backend.h"
#include "flow.h"
#include "models.h"
#include "testing.h"
#include "util.h"

/* ---------------- the exact Gaussian velocity ---------------- */

#define MEAN 1.0
#define STD 0.5

/* E[eps - x0 | x_t = x] for x0 ~ N(m, s^2): k(t) (x - (1 - t) m) - m. */
static double gaussian_velocity(double x, double t, double m, double s) {
    double k = (t - (1 - t) * s * s) / ((1 - t) * (1 - t) * s * s + t * t);
    return k * (x - (1 - t) * m) - m;
}

typedef struct {
    Denoiser base;
    float *out;
    int mixture;      /* 0: N(MEAN, STD^2); 1: 0.5 N(-1, s^2) + 0.5 N(1, s^2) */
} ToyFlow;

#define MIX_STD 0.1

static double mixture_velocity(double x, double t) {
    double var = (1 - t) * (1 - t) * MIX_STD * MIX_STD + t * t, num = 0, den = 0;
    for (int j = -1; j <= 1; j += 2) {
        double d = x - (1 - t) * j, w = exp(-0.5 * d * d / var);
        num += w * gaussian_velocity(x, t, j, MIX_STD);
        den += w;
    }
    return num / den;
}

static const float *toy_flow_predict(Denoiser *self, const float *x, int n, float time) {
    ToyFlow *toy = (ToyFlow *)self;
    double t = time / FLOW_TIME_SCALE;
    for (size_t i = 0; i < (size_t)n * self->sample_size; i++)
        toy->out[i] = (float)(toy->mixture ? mixture_velocity(x[i], t)
                                           : gaussian_velocity(x[i], t, MEAN, STD));
    return toy->out;
}

static void toy_flow_init(ToyFlow *toy, size_t d, int mixture) {
    *toy = (ToyFlow){.base = {.predict = toy_flow_predict, .be = backend_cpu(), .max_batch = 1,
                              .sample_size = d, .output = {.prediction = PRED_VELOCITY, .channels = 1}},
                     .out = xmalloc(d * sizeof(float)), .mixture = mixture};
}

static void uniform_grid(int n, double *sigmas) {
    for (int i = 0; i <= n; i++) sigmas[i] = 1.0 - (double)i / n;
}

/* Runs euler (heun = 0) or heun on x (1 sample of toy's size) over sigmas. */
static void run_flow(ToyFlow *toy, const double *sigmas, int count, int heun, int last_euler,
                     float *x) {
    SamplerPlan plan;
    char err[256];
    if (flow_plan_init(&plan, sigmas, count, heun, last_euler, &toy->base, err, sizeof err) != 0)
        die("%s", err);
    sampler_run(&plan, &toy->base, x, 1, (RngKey){0}, 0);
    sampler_plan_free(&plan);
}

/* The affine map x -> A x + B of N uniform steps, read off two points. */
static void step_map(int n, int heun, int last_euler, double *A, double *B) {
    ToyFlow toy;
    toy_flow_init(&toy, 2, 0);
    double *sigmas = xmalloc((size_t)(n + 1) * sizeof(double));
    uniform_grid(n, sigmas);
    float x[2] = {0.0f, 1.0f};
    run_flow(&toy, sigmas, n, heun, last_euler, x);
    *B = x[0];
    *A = x[1] - x[0];
    free(sigmas);
    free(toy.out);
}

static void check_solver_table(void) {
    /* The table: std after N steps on sigma = 1, 1 - 1/N, ..., 0 (no shift). */
    static const struct { int n; double euler, heun, heun_last_euler; } table[] = {
        {10, 0.430783, 0.501720, 0.490813}, {20, 0.464248, 0.500508, 0.497888}};
    double err[3][3];
    for (int r = 0; r < 3; r++) {
        int n = 10 << r;
        for (int kind = 0; kind < 3; kind++) {
            double A, B;
            step_map(n, kind > 0, kind == 2, &A, &B);
            CHECK(fabs(B - MEAN) < 1e-5, "N=%d kind %d: mean %.7f, exact %.1f", n, kind, B, MEAN);
            err[kind][r] = fabs(fabs(A) - STD);
            if (r < 2) {
                double want = kind == 0 ? table[r].euler : kind == 1 ? table[r].heun
                                                                     : table[r].heun_last_euler;
                CHECK(fabs(fabs(A) - want) < 5e-6, "N=%d kind %d: std %.6f, table %.6f", n, kind,
                      fabs(A), want);
            }
        }
    }
    printf("  std error at N = 10, 20, 40: euler %.2e %.2e %.2e, heun %.2e %.2e %.2e, "
           "heun (last step euler) %.2e %.2e %.2e\n", err[0][0], err[0][1], err[0][2], err[1][0],
           err[1][1], err[1][2], err[2][0], err[2][1], err[2][2]);
    for (int r = 0; r < 2; r++) {
        double euler = err[0][r] / err[0][r + 1];
        CHECK(euler > 1.8 && euler < 2.2, "euler: error ratio %.2f when N doubles (order 1: 2)", euler);
        for (int kind = 1; kind < 3; kind++) {
            double heun = err[kind][r] / err[kind][r + 1];
            CHECK(heun > 3.0 && heun < 5.0, "heun %d: error ratio %.2f when N doubles (order 2: 4)",
                  kind, heun);
        }
    }
}

#define LAW_SAMPLES 20000

static void check_sampled_law(void) {
    const int n = 10;
    for (int heun = 0; heun <= 1; heun++) {
        double A, B;
        step_map(n, heun, 1, &A, &B);
        ToyFlow toy;
        toy_flow_init(&toy, LAW_SAMPLES, 0);
        float *x = xmalloc(LAW_SAMPLES * sizeof(float));
        cpu_normal_fill(x, 1, LAW_SAMPLES, (RngKey){11, RNG_STREAM_SAMPLE_XT, 0, 0});
        double sigmas[n + 1];
        uniform_grid(n, sigmas);
        run_flow(&toy, sigmas, n, heun, 1, x);
        double s = 0, s2 = 0;
        for (int i = 0; i < LAW_SAMPLES; i++) s += x[i], s2 += (double)x[i] * x[i];
        double mean = s / LAW_SAMPLES, std = sqrt(s2 / LAW_SAMPLES - mean * mean);
        double se_mean = fabs(A) / sqrt(LAW_SAMPLES), se_std = fabs(A) / sqrt(2.0 * LAW_SAMPLES);
        CHECK(fabs(mean - B) < 4 * se_mean, "%s: sample mean %.4f, law %.4f (se %.4f)",
              heun ? "heun" : "euler", mean, B, se_mean);
        CHECK(fabs(std - fabs(A)) < 4 * se_std, "%s: sample std %.4f, law %.4f (se %.4f)",
              heun ? "heun" : "euler", std, fabs(A), se_std);
        free(x);
        free(toy.out);
    }
}

/* ---------------- the mixture ---------------- */

#define MIX_SAMPLES 20000

static double mixture_cdf(double x) {
    return 0.5 + 0.25 * (erf((x + 1) / (MIX_STD * sqrt(2))) + erf((x - 1) / (MIX_STD * sqrt(2))));
}

static int compare_floats(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* W1 = integral of |F_n - F| over x, on a fine grid. */
static double w1_to_mixture(float *x, int n) {
    qsort(x, (size_t)n, sizeof(float), compare_floats);
    double w1 = 0, dx = 1e-3;
    int below = 0;
    for (double at = -4; at < 4; at += dx) {
        while (below < n && x[below] <= at) below++;
        w1 += fabs((double)below / n - mixture_cdf(at)) * dx;
    }
    return w1;
}

static void check_mixture(void) {
    static const int steps[] = {1, 2, 4, 8, 32};
    double previous = INFINITY, w1[5];
    ToyFlow toy;
    toy_flow_init(&toy, MIX_SAMPLES, 1);
    float *x = xmalloc(MIX_SAMPLES * sizeof(float));
    for (int k = 0; k < 5; k++) {
        cpu_normal_fill(x, 1, MIX_SAMPLES, (RngKey){12, RNG_STREAM_SAMPLE_XT, 0, 0});
        double sigmas[33];
        uniform_grid(steps[k], sigmas);
        run_flow(&toy, sigmas, steps[k], 0, 0, x);
        w1[k] = w1_to_mixture(x, MIX_SAMPLES);
        CHECK(w1[k] < previous, "W1 %.4f at %d euler steps is not below %.4f at fewer", w1[k],
              steps[k], previous);
        previous = w1[k];
    }
    printf("  mixture W1 after 1, 2, 4, 8, 32 euler steps: %.4f %.4f %.4f %.4f %.4f\n", w1[0],
           w1[1], w1[2], w1[3], w1[4]);
    CHECK(w1[4] < 0.05, "W1 %.4f after 32 steps", w1[4]);
    free(x);
    free(toy.out);
}

/* ---------------- equivalences and conversions ---------------- */

#define EQ_D 512

/* A DDPM model that knows the answer: the exact eps of data N(MEAN, STD^2) on process. */
typedef struct {
    Denoiser base;
    const GaussianDiffusion *process;
    float out[EQ_D];
} ToyEps;

static const float *toy_eps_predict(Denoiser *self, const float *x, int n, float t) {
    ToyEps *toy = (ToyEps *)self;
    double ab = toy->process->alphas_cumprod[(int)lround(t)];
    double k = sqrt(1 - ab) / (ab * STD * STD + 1 - ab);
    for (int i = 0; i < EQ_D; i++) toy->out[i] = (float)(k * (x[i] - sqrt(ab) * MEAN));
    return toy->out;
}

/* The flow grid of a DDIM plan's timesteps, noisiest first, then 0. */
static void matched_grid(const SamplerPlan *ddim, const GaussianDiffusion *base, double *sigmas) {
    for (int k = 0; k < ddim->count; k++) {
        double scale;
        flow_from_vp(base->alphas_cumprod[ddim->model_t[ddim->count - 1 - k]], &sigmas[k], &scale);
    }
    sigmas[ddim->count] = 0;
}

static double max_diff_scaled(const float *flow, const float *vp, double vp_to_flow) {
    double worst = 0;
    for (int i = 0; i < EQ_D; i++) worst = fmax(worst, fabs(flow[i] - vp_to_flow * vp[i]));
    return worst;
}

/* DDIM (eta = 0) on the VP process and Euler on the matched flow grid, from the same x_T:
 * one step, and the whole run, through `vp_den` (an eps model) and `flow_den` (a velocity
 * model). */
static void check_ddim_is_euler(const GaussianDiffusion *d, Denoiser *vp_den, Denoiser *flow_den,
                                const char *what) {
    SamplerOptions opt = {.kind = SAMPLER_DDIM, .spacing = "ddim10"};
    SamplerPlan ddim, euler;
    char err[256];
    if (sampler_plan_init(&ddim, d, &opt, &vp_den->output, err, sizeof err) != 0) die("%s", err);
    double sigmas[11];
    matched_grid(&ddim, d, sigmas);
    if (flow_plan_init(&euler, sigmas, ddim.count, 0, 0, flow_den, err, sizeof err) != 0)
        die("%s", err);
    static float x_vp[EQ_D], x_flow[EQ_D];
    cpu_normal_fill(x_vp, 1, EQ_D, (RngKey){13, RNG_STREAM_SAMPLE_XT, 0, 0});
    double sigma0, k0, sigma1, k1;
    flow_from_vp(d->alphas_cumprod[ddim.model_t[ddim.count - 1]], &sigma0, &k0);
    flow_from_vp(d->alphas_cumprod[ddim.model_t[ddim.count - 2]], &sigma1, &k1);
    for (int i = 0; i < EQ_D; i++) x_flow[i] = (float)(k0 * x_vp[i]);
    ddim.step(&ddim, ddim.count - 1, vp_den, x_vp, 1, (RngKey){0});
    euler.step(&euler, 0, flow_den, x_flow, 1, (RngKey){0});
    double one = max_diff_scaled(x_flow, x_vp, k1);
    CHECK(one < 1e-6, "%s: one Euler step differs from its DDIM step by %.2e", what, one);
    cpu_normal_fill(x_vp, 1, EQ_D, (RngKey){13, RNG_STREAM_SAMPLE_XT, 0, 0});
    for (int i = 0; i < EQ_D; i++) x_flow[i] = (float)(k0 * x_vp[i]);
    sampler_run(&ddim, vp_den, x_vp, 1, (RngKey){0}, 0);
    sampler_run(&euler, flow_den, x_flow, 1, (RngKey){0}, 0);
    double all = max_diff_scaled(x_flow, x_vp, 1.0);
    printf("  %s: |euler - ddim| %.1e after one step, %.1e after 10\n", what, one, all);
    CHECK(all < 1e-5, "%s: 10 Euler steps differ from 10 DDIM steps by %.2e", what, all);
    sampler_plan_free(&ddim);
    sampler_plan_free(&euler);
}

static void check_equivalence(void) {
    GaussianDiffusion d;
    char err[256];
    if (diffusion_init(&d, "linear", 1000, PRED_EPS, VAR_FIXED_SMALL, err, sizeof err)) die("%s", err);
    ToyFlow flow;
    toy_flow_init(&flow, EQ_D, 0);
    EpsFromVelocity as_eps;
    eps_from_velocity_init(&as_eps, &flow.base, &d);
    check_ddim_is_euler(&d, &as_eps.base, &flow.base, "flow model under DDIM");
    static ToyEps eps;
    eps = (ToyEps){.base = {.predict = toy_eps_predict, .be = backend_cpu(), .max_batch = 1,
                            .sample_size = EQ_D, .output = {.prediction = PRED_EPS, .channels = 1}},
                   .process = &d};
    VelocityFromDdpm as_velocity;
    velocity_from_ddpm_init(&as_velocity, &eps.base, &d);
    check_ddim_is_euler(&d, &eps.base, &as_velocity.base, "DDPM eps model under Euler");
    velocity_from_ddpm_free(&as_velocity);
    eps_from_velocity_free(&as_eps);
    free(flow.out);
    diffusion_free(&d);
}

/* An oracle DDPM model: the exact eps, x0 or v of known (x0, eps) at its timestep. */
typedef struct {
    Denoiser base;
    const GaussianDiffusion *process;
    const float *x0, *eps;
    float out[EQ_D];
} Oracle;

static const float *oracle_predict(Denoiser *self, const float *x, int n, float t) {
    Oracle *o = (Oracle *)self;
    double ab = o->process->alphas_cumprod[(int)lround(t)];
    for (int i = 0; i < EQ_D; i++) {
        switch (self->output.prediction) {
        case PRED_X0: o->out[i] = o->x0[i]; break;
        case PRED_V: o->out[i] = (float)(sqrt(ab) * o->eps[i] - sqrt(1 - ab) * o->x0[i]); break;
        default: o->out[i] = o->eps[i]; break;
        }
    }
    return o->out;
}

/* A velocity model off by a known error: u_hat = eps - x0 + err. */
typedef struct {
    Denoiser base;
    const float *x0, *eps, *err;
    float out[EQ_D];
} Noisy;

static const float *noisy_predict(Denoiser *self, const float *x, int n, float t) {
    Noisy *m = (Noisy *)self;
    for (int i = 0; i < EQ_D; i++) m->out[i] = m->eps[i] - m->x0[i] + m->err[i];
    return m->out;
}

static void check_conversions(void) {
    GaussianDiffusion d;
    char err[256];
    if (diffusion_init(&d, "linear", 1000, PRED_EPS, VAR_FIXED_SMALL, err, sizeof err)) die("%s", err);
    static float x0[EQ_D], eps[EQ_D], noise[EQ_D], x[EQ_D];
    cpu_normal_fill(x0, 1, EQ_D, (RngKey){14, 1, 0, 0});
    cpu_normal_fill(eps, 1, EQ_D, (RngKey){14, 2, 0, 0});
    cpu_normal_fill(noise, 1, EQ_D, (RngKey){14, 3, 0, 0});
    static const PredictionType kinds[] = {PRED_EPS, PRED_X0, PRED_V};
    static const char *names[] = {"eps", "x0", "v"};
    for (int t = 100; t < 1000; t += 400) {
        double sigma, k;
        flow_from_vp(d.alphas_cumprod[t], &sigma, &k);
        for (int i = 0; i < EQ_D; i++) x[i] = (float)((1 - sigma) * x0[i] + sigma * eps[i]);
        for (int p = 0; p < 3; p++) {   /* a DDPM model of each kind -> the velocity */
            static Oracle oracle;
            oracle = (Oracle){.base = {.predict = oracle_predict, .be = backend_cpu(), .max_batch = 1,
                                       .sample_size = EQ_D,
                                       .output = {.prediction = kinds[p], .channels = 1}},
                              .process = &d, .x0 = x0, .eps = eps};
            VelocityFromDdpm as_velocity;
            velocity_from_ddpm_init(&as_velocity, &oracle.base, &d);
            const float *u = as_velocity.base.predict(&as_velocity.base, x, 1,
                                                      (float)(FLOW_TIME_SCALE * sigma));
            double worst = 0;
            for (int i = 0; i < EQ_D; i++) worst = fmax(worst, fabs(u[i] - (eps[i] - x0[i])));
            CHECK(worst < 2e-4 * (1 + k), "t=%d: %s model -> velocity off by %.2e", t, names[p], worst);
            velocity_from_ddpm_free(&as_velocity);
        }
        /* a velocity model with a known error -> eps (and x0): the error identities */
        static Noisy noisy;
        noisy = (Noisy){.base = {.predict = noisy_predict, .be = backend_cpu(), .max_batch = 1,
                                 .sample_size = EQ_D, .output = {.prediction = PRED_VELOCITY, .channels = 1}},
                        .x0 = x0, .eps = eps, .err = noise};
        EpsFromVelocity as_eps;
        eps_from_velocity_init(&as_eps, &noisy.base, &d);
        static float x_vp[EQ_D];
        for (int i = 0; i < EQ_D; i++) x_vp[i] = (float)(x[i] / k);
        const float *eps_hat = as_eps.base.predict(&as_eps.base, x_vp, 1, (float)t);
        double ab = d.alphas_cumprod[t], e_u = 0, e_eps = 0, e_x0 = 0;
        for (int i = 0; i < EQ_D; i++) {
            double x0_hat = (x_vp[i] - sqrt(1 - ab) * eps_hat[i]) / sqrt(ab);
            e_u += (double)noise[i] * noise[i];
            e_eps += (eps_hat[i] - eps[i]) * (eps_hat[i] - eps[i]);
            e_x0 += (x0_hat - x0[i]) * (x0_hat - x0[i]);
        }
        double want_eps = (1 - sigma) * (1 - sigma) * e_u, want_x0 = sigma * sigma * e_u;
        CHECK(fabs(e_eps - want_eps) <= 1e-6 * want_eps + 1e-9,
              "t=%d: |eps error|^2 %.9g, (1 - t)^2 |u error|^2 %.9g", t, e_eps, want_eps);
        CHECK(fabs(e_x0 - want_x0) <= 1e-5 * want_x0 + 1e-9,
              "t=%d: |x0 error|^2 %.9g, t^2 |u error|^2 %.9g", t, e_x0, want_x0);
        eps_from_velocity_free(&as_eps);
    }
    diffusion_free(&d);
}

/* ---------------- the grid ---------------- */

static void check_grid(void) {
    const char *path = "tests/ref/flow_sigmas_28_shift3.txt";
    FILE *f = fopen(path, "r");
    CHECK(f != NULL, "%s: cannot open (run tools/make_flow_grid.py)", path);
    if (!f) return;
    double want[40], got[29];
    int n = 0;
    while (n < 40 && fscanf(f, "%lf", &want[n]) == 1) n++;
    fclose(f);
    CHECK(n == 29, "%s: %d values, expected 28 sigmas and the final 0", path, n);
    flow_sigma_grid(28, 1000, 3.0, got);
    double worst = 0;
    for (int i = 0; i < 29 && i < n; i++) worst = fmax(worst, fabs(got[i] - want[i]));
    CHECK(worst < 1e-6, "sigma grid (28 steps, shift 3) differs from diffusers' by %.2e", worst);
    CHECK(got[28] == 0.0 && got[0] == 1.0, "the grid runs from 1 to a final 0");
    double plain[6];
    flow_sigma_grid(5, 1000, 1.0, plain);
    CHECK(fabs(plain[4] - 0.001) < 1e-12 && fabs(plain[1] - (1 - 0.999 / 4)) < 1e-12,
          "shift 1: evenly from 1 to 1/1000 (got %.6f, %.6f)", plain[1], plain[4]);
}

/* ---------------- the time sampler ---------------- */

#define KS_DRAWS 100000

static double normal_cdf(double z) { return 0.5 * erfc(-z / sqrt(2)); }

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The KS statistic of draws of `kind` against logit-normal(0, 1). */
static double ks_logit_normal(int kind) {
    double *t = xmalloc(KS_DRAWS * sizeof(double));
    RngKey key = {5, RNG_STREAM_TIMESTEP, 3, 0};
    for (int i = 0; i < KS_DRAWS; i++) t[i] = flow_time_draw(kind, 0, 1, key, (uint32_t)i);
    qsort(t, KS_DRAWS, sizeof(double), compare_doubles);
    double worst = 0;
    for (int i = 0; i < KS_DRAWS; i++) {
        double F = normal_cdf(log(t[i] / (1 - t[i])));
        worst = fmax(worst, fmax(fabs(F - (double)i / KS_DRAWS), fabs(F - (i + 1.0) / KS_DRAWS)));
    }
    free(t);
    return worst;
}

static void check_time_sampler(void) {
    double critical = 1.95 / sqrt(KS_DRAWS);   /* alpha = 0.001 */
    double ks = ks_logit_normal(TIMESTEPS_LOGIT_NORMAL), control = ks_logit_normal(TIMESTEPS_UNIFORM);
    printf("  KS of 1e5 logit-normal draws: %.5f (critical %.5f); uniform draws: %.5f\n", ks,
           critical, control);
    CHECK(ks < critical, "logit-normal draws fail KS: %.5f >= %.5f", ks, critical);
    CHECK(control > critical, "KS cannot tell uniform from logit-normal draws (%.5f)", control);
}

/* ---------------- the objective ---------------- */

static void check_objective(void) {
    Config cfg;
    char err[512];
    config_defaults(&cfg);
    if (config_load_file(&cfg, "configs/tiny", err, sizeof err) != 0) die("%s", err);
    if (config_set(&cfg, "objective=flow", err, sizeof err) || config_set(&cfg, "hflip=false", err, sizeof err) ||
        config_validate(&cfg, err, sizeof err))
        die("%s", err);
    const Backend *be = backend_cpu();
    const int B = 16, H = cfg.image_size;
    const size_t D = (size_t)H * H;
    Net *net = model_build(be, &cfg, B, 0);
    net_init_weights(net, 1, NULL);
    const ParamInfo *w = net_find_param(net, "conv_out.weight"), *bias = net_find_param(net, "conv_out.bias");
    CHECK(w && bias, "the U-Net has conv_out");
    if (!w || !bias) return;
    be->fill(net->weights + w->offset, 0.0f, w->numel);
    be->fill(net->weights + bias->offset, 0.0f, bias->numel);
    Objective *o = objective_create(be, &cfg, B, B);
    uint8_t *images = xmalloc((size_t)B * D);
    for (size_t i = 0; i < (size_t)B * D; i++) images[i] = (uint8_t)((i * 37 + i / 91) % 256);
    const long step = 7;
    StepBatch batch = {.step = step, .b = B, .B = B, .images = images};
    o->ops->draw(o, step, B);
    o->ops->prepare(o, net, &batch);
    net_forward(net, B, NULL, (RngKey){0});
    float stats[16];
    o->ops->loss(o, net, &batch, stats);
    ObjectiveReport report;
    float *all[1] = {stats};
    o->ops->report(o, all, B, &report);
    const float *x_t = net_input_data(net, "sample"), *time = net_input_data(net, "timestep");
    RngKey t_key = {cfg.seed, RNG_STREAM_TIMESTEP, (uint32_t)step, 0};
    RngKey eps_key = {cfg.seed, RNG_STREAM_EPS, (uint32_t)step, 0};
    double worst_x = 0, worst_loss = 0, worst_time = 0, loss = 0, x0_sq = 0;
    for (int s = 0; s < B; s++) {
        double t = flow_time_draw(TIMESTEPS_UNIFORM, 0, 1, t_key, (uint32_t)s), sample_loss = 0;
        worst_time = fmax(worst_time, fabs(time[s] - 1000 * t));
        for (size_t e = 0; e < D; e++) {
            double x0 = images[s * D + e] / 127.5 - 1, eps = philox_normal(eps_key, (uint32_t)s, e);
            worst_x = fmax(worst_x, fabs(x_t[s * D + e] - ((1 - t) * x0 + t * eps)));
            sample_loss += (eps - x0) * (eps - x0) / D;
            x0_sq += x0 * x0 / (B * D);
        }
        worst_loss = fmax(worst_loss, fabs(stats[s] - sample_loss) / sample_loss);
        loss += sample_loss / B;
    }
    CHECK(worst_time < 1e-4, "time input is not 1000 t (off by %.2e)", worst_time);
    CHECK(worst_x < 1e-6, "x_t is not (1 - t) x0 + t eps (off by %.2e)", worst_x);
    CHECK(worst_loss < 1e-5, "with a zero output the loss is not mean((eps - x0)^2) (rel %.2e)",
          worst_loss);
    /* E[(eps - x0)^2] = 1 + x0^2; the deviation mean(eps^2 - 1) - 2 mean(eps x0) has variance
     * (2 + 4 mean(x0^2)) / (B D). */
    double se = sqrt((2 + 4 * x0_sq) / (B * D));
    printf("  first loss %.4f, 1 + mean(x0^2) = %.4f (se %.4f)\n", report.loss, 1 + x0_sq, se);
    CHECK(fabs(report.loss - (1 + x0_sq)) < 4 * se, "first loss %.4f, expected 1 + mean(x0^2) = %.4f",
          report.loss, 1 + x0_sq);
    CHECK(fabs(report.loss - loss) < 1e-5 * loss, "report mean");
    free(images);
    objective_free(o);
    net_free(net);
}

/* ---------------- refusals ---------------- */

static void check_refusals(void) {
    char err[256] = "";
    ToyFlow flow;
    toy_flow_init(&flow, 4, 0);
    GaussianDiffusion d;
    if (diffusion_init(&d, "linear", 1000, PRED_EPS, VAR_FIXED_SMALL, err, sizeof err)) die("%s", err);
    SamplerPlan plan;
    SamplerOptions ddim = {.kind = SAMPLER_DDIM, .spacing = "10"};
    CHECK(sampler_plan_init(&plan, &d, &ddim, &flow.base.output, err, sizeof err) != 0 &&
              strstr(err, "velocity"), "DDIM on a velocity model: '%s'", err);
    Denoiser eps_model = flow.base;
    eps_model.output.prediction = PRED_EPS;
    SamplerOptions euler = {.kind = SAMPLER_EULER, .spacing = "10"};
    CHECK(flow_plan_from_options(&plan, &euler, 1000, &eps_model, err, sizeof err) != 0 &&
              strstr(err, "velocity"), "Euler on an eps model: '%s'", err);
    SamplerOptions bad_shift = {.kind = SAMPLER_EULER, .spacing = "10", .shift = -1};
    CHECK(flow_plan_from_options(&plan, &bad_shift, 1000, &flow.base, err, sizeof err) != 0 &&
              strstr(err, "shift"), "shift -1: '%s'", err);
    SamplerOptions no_steps = {.kind = SAMPLER_HEUN, .spacing = "0"};
    CHECK(flow_plan_from_options(&plan, &no_steps, 1000, &flow.base, err, sizeof err) != 0 &&
              strstr(err, "steps"), "0 steps: '%s'", err);
    SamplerOptions heun = {.kind = SAMPLER_HEUN, .spacing = "3"};
    CHECK(flow_plan_from_options(&plan, &heun, 1000, &flow.base, err, sizeof err) == 0 &&
              flow_plan_evaluations(&plan) == 5, "heun, 3 steps: 5 model evaluations");
    sampler_plan_free(&plan);
    diffusion_free(&d);
    free(flow.out);
}

int main(void) {
    check_grid();
    check_objective();
    check_solver_table();
    check_sampled_law();
    check_mixture();
    check_equivalence();
    check_conversions();
    check_time_sampler();
    check_refusals();
    return test_summary("flow");
}
