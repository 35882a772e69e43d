/* Schedules, the forward process q, its posterior, and the reverse-process
 * parameterisation p, in double precision. Names follow improved-diffusion's
 * gaussian_diffusion.py; the formulas follow Ho et al. 2020, eqs. 4, 6, 7 and 11. */
#include "diffusion.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* The paper's 1e-4..0.02 at T = 1000, scaled so that other T keep the same total noise. */
static void scaled_beta_range(int num_timesteps, double *start, double *end) {
    double scale = 1000.0 / num_timesteps;
    *start = scale * 1e-4;
    *end = scale * 0.02;
}

static double linspace(double a, double b, int i, int n) {
    return n == 1 ? a : a + (b - a) * i / (n - 1);
}

static double cosine_alpha_bar(double u) {
    double s = 0.008;
    double c = cos((u + s) / (1 + s) * M_PI / 2);
    return c * c;
}

int get_named_beta_schedule(const char *name, int T, double *betas) {
    double start, end;
    scaled_beta_range(T, &start, &end);
    for (int i = 0; i < T; i++) {
        if (strcmp(name, "linear") == 0) {
            betas[i] = linspace(start, end, i, T);
        } else if (strcmp(name, "quadratic") == 0) {
            double r = linspace(sqrt(start), sqrt(end), i, T);
            betas[i] = r * r;
        } else if (strcmp(name, "sigmoid") == 0) {
            betas[i] = 1 / (1 + exp(-linspace(-6, 6, i, T))) * (end - start) + start;
        } else if (strcmp(name, "cosine") == 0) {
            double b = 1 - cosine_alpha_bar((i + 1.0) / T) / cosine_alpha_bar((double)i / T);
            betas[i] = b < 0.999 ? b : 0.999;
        } else {
            return -1;
        }
    }
    return 0;
}

static void compute_arrays(GaussianDiffusion *d) {
    int T = d->num_timesteps;
    double cumprod = 1;
    for (int t = 0; t < T; t++) {
        cumprod *= 1 - d->betas[t];
        d->alphas_cumprod[t] = cumprod;
    }
    for (int t = 0; t < T; t++) {
        double ac = d->alphas_cumprod[t];
        double ac_prev = t > 0 ? d->alphas_cumprod[t - 1] : 1.0;
        double beta = d->betas[t];
        d->alphas_cumprod_prev[t] = ac_prev;
        d->alphas_cumprod_next[t] = t + 1 < T ? d->alphas_cumprod[t + 1] : 0.0;
        d->sqrt_alphas_cumprod[t] = sqrt(ac);
        d->sqrt_one_minus_alphas_cumprod[t] = sqrt(1 - ac);
        d->log_one_minus_alphas_cumprod[t] = log(1 - ac);
        d->sqrt_recip_alphas_cumprod[t] = sqrt(1 / ac);
        d->sqrt_recipm1_alphas_cumprod[t] = sqrt(1 / ac - 1);
        d->posterior_variance[t] = beta * (1 - ac_prev) / (1 - ac);
        d->posterior_mean_coef1[t] = beta * sqrt(ac_prev) / (1 - ac);
        d->posterior_mean_coef2[t] = (1 - ac_prev) * sqrt(1 - beta) / (1 - ac);
    }
    /* The posterior variance is 0 at t = 0: its log is clipped to the value at t = 1. */
    for (int t = 0; t < T; t++)
        d->posterior_log_variance_clipped[t] = log(d->posterior_variance[t > 0 ? t : (T > 1)]);
}

int diffusion_init(GaussianDiffusion *d, const char *schedule, int T, PredictionType pred,
                   VarianceType variance, char *err, size_t err_size) {
    memset(d, 0, sizeof *d);
    d->num_timesteps = T;
    d->pred = pred;
    d->variance = variance;
#define ALLOC_ARRAY(name) d->name = xcalloc((size_t)T, sizeof(double));
    DIFFUSION_ARRAYS(ALLOC_ARRAY)
#undef ALLOC_ARRAY
    if (get_named_beta_schedule(schedule, T, d->betas) != 0) {
        snprintf(err, err_size, "unknown beta schedule '%s'", schedule);
        diffusion_free(d);
        return -1;
    }
    for (int t = 0; t < T; t++) {
        if (!(d->betas[t] > 0 && d->betas[t] <= 1)) {
            snprintf(err, err_size, "schedule '%s' with T=%d gives beta[%d] = %g outside (0, 1]",
                     schedule, T, t, d->betas[t]);
            diffusion_free(d);
            return -1;
        }
    }
    compute_arrays(d);
    return 0;
}

void diffusion_free(GaussianDiffusion *d) {
    free(d->timestep_map);
    d->timestep_map = NULL;
#define FREE_ARRAY(name) free(d->name); d->name = NULL;
    DIFFUSION_ARRAYS(FREE_ARRAY)
#undef FREE_ARRAY
}

static const char *const array_names[] = {
#define NAME_OF(name) #name,
    DIFFUSION_ARRAYS(NAME_OF)
#undef NAME_OF
};

const char *const *diffusion_array_names(int *count) {
    *count = (int)(sizeof array_names / sizeof array_names[0]);
    return array_names;
}

const double *diffusion_array(const GaussianDiffusion *d, int index) {
    const double *arrays[] = {
#define POINTER_OF(name) d->name,
        DIFFUSION_ARRAYS(POINTER_OF)
#undef POINTER_OF
    };
    return arrays[index];
}

void q_sample(const GaussianDiffusion *d, const float *x_start, int t, const float *noise,
              float *x_t, size_t n) {
    double a = d->sqrt_alphas_cumprod[t], b = d->sqrt_one_minus_alphas_cumprod[t];
    for (size_t i = 0; i < n; i++) x_t[i] = (float)(a * x_start[i] + b * noise[i]);
}

void q_posterior_mean_variance(const GaussianDiffusion *d, const float *x_start, const float *x_t,
                               int t, float *mean, double *variance, double *log_variance,
                               size_t n) {
    double c1 = d->posterior_mean_coef1[t], c2 = d->posterior_mean_coef2[t];
    for (size_t i = 0; i < n; i++) mean[i] = (float)(c1 * x_start[i] + c2 * x_t[i]);
    *variance = d->posterior_variance[t];
    *log_variance = d->posterior_log_variance_clipped[t];
}

void predict_xstart_from_eps(const GaussianDiffusion *d, const float *x_t, int t,
                             const float *eps, float *x_start, size_t n) {
    double a = d->sqrt_recip_alphas_cumprod[t], b = d->sqrt_recipm1_alphas_cumprod[t];
    for (size_t i = 0; i < n; i++) x_start[i] = (float)(a * x_t[i] - b * eps[i]);
}

void predict_eps_from_xstart(const GaussianDiffusion *d, const float *x_t, int t,
                             const float *x_start, float *eps, size_t n) {
    double a = d->sqrt_recip_alphas_cumprod[t], b = d->sqrt_recipm1_alphas_cumprod[t];
    for (size_t i = 0; i < n; i++) eps[i] = (float)((a * x_t[i] - x_start[i]) / b);
}

double model_log_variance(const GaussianDiffusion *d, int t) {
    if (d->variance == VAR_FIXED_SMALL) return d->posterior_log_variance_clipped[t];
    /* fixedlarge: beta_t, with the posterior variance at t = 0 for a better decoder term */
    return log(t == 0 && d->num_timesteps > 1 ? d->posterior_variance[1] : d->betas[t]);
}

/* x0 = a*x_t + b*model_out for each prediction type */
void xstart_coefficients(const GaussianDiffusion *d, int t, double *a, double *b) {
    switch (d->pred) {
    default:   /* PRED_EPS; the config validator admits no other value */
        *a = d->sqrt_recip_alphas_cumprod[t];
        *b = -d->sqrt_recipm1_alphas_cumprod[t];
        break;
    case PRED_X0:
        *a = 0;
        *b = 1;
        break;
    case PRED_V:
        *a = d->sqrt_alphas_cumprod[t];
        *b = -d->sqrt_one_minus_alphas_cumprod[t];
        break;
    }
}

void p_mean_variance(const GaussianDiffusion *d, const float *model_out, const float *x_t, int t,
                     int clip_denoised, float *mean, double *variance, double *log_variance,
                     float *pred_xstart, size_t n) {
    double a, b;
    xstart_coefficients(d, t, &a, &b);
    for (size_t i = 0; i < n; i++) {
        double x0 = a * x_t[i] + b * model_out[i];
        if (clip_denoised) x0 = x0 < -1 ? -1 : x0 > 1 ? 1 : x0;
        pred_xstart[i] = (float)x0;
    }
    double unused_var, unused_log_var;
    q_posterior_mean_variance(d, pred_xstart, x_t, t, mean, &unused_var, &unused_log_var, n);
    *log_variance = model_log_variance(d, t);
    *variance = exp(*log_variance);
}

SampleUpdate p_sample_update(const GaussianDiffusion *d, int t, int clip_denoised) {
    double a, b;
    xstart_coefficients(d, t, &a, &b);
    SampleUpdate u = {
        .x0_from_xt = (float)a,
        .x0_from_out = (float)b,
        .coef_x0 = (float)d->posterior_mean_coef1[t],
        .coef_xt = (float)d->posterior_mean_coef2[t],
        .sigma = t > 0 ? (float)exp(0.5 * model_log_variance(d, t)) : 0.0f,
        .clip_x0 = clip_denoised,
    };
    return u;
}

int diffusion_from_config(GaussianDiffusion *d, const Config *cfg, char *err, size_t err_size) {
    return diffusion_init(d, cfg->beta_schedule, cfg->timesteps, (PredictionType)cfg->prediction,
                          (VarianceType)cfg->variance, err, err_size);
}

SampleUpdate ddim_sample_update(const GaussianDiffusion *d, int t, double eta, int clip_denoised) {
    SampleUpdate u = p_sample_update(d, t, clip_denoised);
    double ab = d->alphas_cumprod[t], ab_prev = d->alphas_cumprod_prev[t];
    double sigma = eta * sqrt((1 - ab_prev) / (1 - ab)) * sqrt(1 - ab / ab_prev);
    double k = sqrt(fmax(1 - ab_prev - sigma * sigma, 0.0));
    /* x_{t-1} = sqrt(ab_prev)*x0 + k*eps + sigma*z with eps = (x_t/sqrt(ab) - x0)/sqrt(1/ab - 1) */
    double sra = d->sqrt_recip_alphas_cumprod[t], srm1 = d->sqrt_recipm1_alphas_cumprod[t];
    u.coef_x0 = (float)(sqrt(ab_prev) - k / srm1);
    u.coef_xt = (float)(k * sra / srm1);
    u.sigma = t > 0 ? (float)sigma : 0.0f;
    return u;
}

SampleUpdate ddim_reverse_update(const GaussianDiffusion *d, int t) {
    SampleUpdate u = p_sample_update(d, t, 0);
    double ab_next = d->alphas_cumprod_next[t];
    double sra = d->sqrt_recip_alphas_cumprod[t], srm1 = d->sqrt_recipm1_alphas_cumprod[t];
    u.coef_x0 = (float)(sqrt(ab_next) - sqrt(1 - ab_next) / srm1);
    u.coef_xt = (float)(sqrt(1 - ab_next) * sra / srm1);
    u.sigma = 0.0f;
    return u;
}

int model_timestep(const GaussianDiffusion *d, int t) {
    return d->timestep_map ? d->timestep_map[t] : t;
}

double prior_bpd(const GaussianDiffusion *d, const float *x0, size_t n) {
    int last = d->num_timesteps - 1;
    double a = d->sqrt_alphas_cumprod[last], logvar = log(1 - d->alphas_cumprod[last]);
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        double mean = a * x0[i];
        sum += 0.5 * (-1.0 - logvar + exp(logvar) + mean * mean);   /* normal_kl to N(0, 1) */
    }
    return sum / (double)n / log(2.0);
}

static int fail_spacing(char *err, size_t err_size, const char *spec, const char *why) {
    snprintf(err, err_size, "timestep spacing '%s': %s", spec, why);
    return -1;
}

static int compare_ints(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* Python's round(): halves go to the even neighbour, as improved-diffusion's spacing does. */
static long round_half_even(double v) {
    double r = nearbyint(v);   /* the default rounding mode is to nearest, ties to even */
    return (long)r;
}

/* "a,b,c": sections of (nearly) equal size, each with its own count, evenly spread. */
static int space_sections(int T, const char *spec, int *keep, char *err, size_t err_size) {
    int counts[64], sections = 0;
    const char *p = spec;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || sections == 64) return fail_spacing(err, err_size, spec, "expected counts like 50 or 10,10,20");
        counts[sections++] = (int)v;
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return fail_spacing(err, err_size, spec, "expected counts like 50 or 10,10,20");
    }
    if (sections == 0) return fail_spacing(err, err_size, spec, "empty");
    int size_per = T / sections, extra = T % sections, start = 0, total = 0;
    for (int i = 0; i < sections; i++) {
        int size = size_per + (i < extra ? 1 : 0);
        if (size < counts[i]) return fail_spacing(err, err_size, spec, "a section has more steps than timesteps");
        double stride = counts[i] <= 1 ? 1.0 : (double)(size - 1) / (counts[i] - 1);
        double cur = 0;
        for (int j = 0; j < counts[i]; j++, cur += stride) keep[total++] = start + (int)round_half_even(cur);
        start += size;
    }
    qsort(keep, (size_t)total, sizeof(int), compare_ints);
    int unique = 0;
    for (int i = 0; i < total; i++)
        if (unique == 0 || keep[unique - 1] != keep[i]) keep[unique++] = keep[i];
    return unique;
}

int space_timesteps(int T, const char *spec, int *keep, char *err, size_t err_size) {
    if (strncmp(spec, "ddim", 4) != 0) return space_sections(T, spec, keep, err, err_size);
    char *end;
    long desired = strtol(spec + 4, &end, 10);
    if (end == spec + 4 || *end || desired < 1) return fail_spacing(err, err_size, spec, "expected ddimN");
    for (int stride = 1; stride < T; stride++) {
        if ((T + stride - 1) / stride != desired) continue;
        int count = 0;
        for (int t = 0; t < T; t += stride) keep[count++] = t;
        return count;
    }
    return fail_spacing(err, err_size, spec, "no integer stride gives that many steps");
}

void diffusion_respace(GaussianDiffusion *out, const GaussianDiffusion *base, const int *keep,
                       int count) {
    double *betas = xmalloc((size_t)count * sizeof(double));
    double last = 1.0;
    for (int i = 0; i < count; i++) {
        double ac = base->alphas_cumprod[keep[i]];
        betas[i] = 1 - ac / last;
        last = ac;
    }
    memset(out, 0, sizeof *out);
    out->num_timesteps = count;
    out->pred = base->pred;
    out->variance = base->variance;
#define ALLOC_ARRAY(name) out->name = xcalloc((size_t)count, sizeof(double));
    DIFFUSION_ARRAYS(ALLOC_ARRAY)
#undef ALLOC_ARRAY
    memcpy(out->betas, betas, (size_t)count * sizeof(double));
    free(betas);
    compute_arrays(out);
    out->timestep_map = xmalloc((size_t)count * sizeof(int));
    memcpy(out->timestep_map, keep, (size_t)count * sizeof(int));
}
