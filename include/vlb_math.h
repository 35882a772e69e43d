/* Scalar pieces of the variational bound, shared by host C and CUDA so that every
 * backend evaluates the same formulas (improved-diffusion's losses.py):
 * the KL between two Gaussians, the discretized Gaussian log-likelihood of the
 * decoder p(x0|x1) over 256 bins with open edge bins, and their derivatives. */
#ifndef DDPM_VLB_MATH_H
#define DDPM_VLB_MATH_H

#include <math.h>
#include "backend.h"   /* DiffusionTables, LossSpec; philox.h's DDPM_HD */

/* KL(N(m1, e^lv1) || N(m2, e^lv2)) in nats. */
DDPM_HD double normal_kl(double m1, double lv1, double m2, double lv2) {
    double d = m1 - m2;
    return 0.5 * (-1.0 + lv2 - lv1 + exp(lv1 - lv2) + d * d * exp(-lv2));
}

/* d/dm2 and d/dlv2 of normal_kl. */
DDPM_HD void normal_kl_grad(double m1, double lv1, double m2, double lv2, double *d_m2,
                            double *d_lv2) {
    double d = m1 - m2, inv_var2 = exp(-lv2);
    *d_m2 = -d * inv_var2;
    *d_lv2 = 0.5 * (1.0 - exp(lv1 - lv2) - d * d * inv_var2);
}

/* The tanh approximation of the standard normal CDF used by the DDPM papers, and its slope. */
DDPM_HD double approx_standard_normal_cdf(double u) {
    return 0.5 * (1.0 + tanh(0.7978845608028654 * (u + 0.044715 * u * u * u)));
}

DDPM_HD double approx_standard_normal_pdf(double u) {
    double th = tanh(0.7978845608028654 * (u + 0.044715 * u * u * u));
    return 0.5 * (1.0 - th * th) * 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * u * u);
}

/* log p(x) for x on the 256-level grid of [-1, 1] under N(mean, e^(2 log_scale)) integrated
 * over x's bin (+-1/255), with the edge bins open to -inf and +inf. Probabilities are
 * clamped at 1e-12, where the derivative is 0. Writes d/dmean and d/dlog_scale when asked. */
DDPM_HD double discretized_gaussian_log_likelihood(double x, double mean, double log_scale,
                                                   double *d_mean, double *d_log_scale) {
    double inv_stdv = exp(-log_scale), centered = x - mean;
    double plus_in = inv_stdv * (centered + 1.0 / 255.0);
    double min_in = inv_stdv * (centered - 1.0 / 255.0);
    double prob, d_plus = 0, d_min = 0;   /* d log p / d plus_in, d log p / d min_in */
    if (x < -0.999) {
        prob = approx_standard_normal_cdf(plus_in);
        if (prob > 1e-12) d_plus = approx_standard_normal_pdf(plus_in) / prob;
    } else if (x > 0.999) {
        prob = 1.0 - approx_standard_normal_cdf(min_in);
        if (prob > 1e-12) d_min = -approx_standard_normal_pdf(min_in) / prob;
    } else {
        prob = approx_standard_normal_cdf(plus_in) - approx_standard_normal_cdf(min_in);
        if (prob > 1e-12) {
            d_plus = approx_standard_normal_pdf(plus_in) / prob;
            d_min = -approx_standard_normal_pdf(min_in) / prob;
        }
    }
    if (d_mean) *d_mean = -inv_stdv * (d_plus + d_min);
    if (d_log_scale) *d_log_scale = -(d_plus * plus_in + d_min * min_in);
    return log(prob > 1e-12 ? prob : 1e-12);
}

/* One sample's per-timestep values, gathered once from the backend's tables. */
typedef struct {
    int t;
    double a, b;          /* x0 = a*x_t + b*prediction */
    double coef1, coef2, post_logvar, log_var_range, fixed_logvar;
} StepTables;

DDPM_HD StepTables gather_step_tables(const DiffusionTables *tb, int t) {
    StepTables st = {t,            tb->x0_from_xt[t],  tb->x0_from_out[t],   tb->coef1[t],
                     tb->coef2[t], tb->post_logvar[t], tb->log_var_range[t], tb->fixed_logvar[t]};
    return st;
}

/* One element's L_t in nats (the decoder NLL at t = 0, else the KL between the posterior
 * and the model's Gaussian) and its derivatives by the prediction and by v. */
DDPM_HD double vb_element(const StepTables *st, const LossSpec *spec, double pred, double v,
                          double x0, double x_t, double *d_pred, double *d_v) {
    double x0_pred = st->a * x_t + st->b * pred, dx0 = st->b;
    if (spec->clip_x0 && fabs(x0_pred) > 1.0) {
        x0_pred = x0_pred > 0 ? 1.0 : -1.0;
        dx0 = 0;
    }
    double mean = st->coef1 * x0_pred + st->coef2 * x_t;
    double frac = 0.5 * (v + 1.0);
    double logvar = spec->learned_var ? st->post_logvar + frac * st->log_var_range
                                      : st->fixed_logvar;
    double d_mean, d_logvar, term;
    if (st->t == 0) {
        double d_log_scale;
        term = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * logvar, &d_mean, &d_log_scale);
        d_mean = -d_mean;
        d_logvar = -0.5 * d_log_scale;
    } else {
        double true_mean = st->coef1 * x0 + st->coef2 * x_t;
        term = normal_kl(true_mean, st->post_logvar, mean, logvar);
        normal_kl_grad(true_mean, st->post_logvar, mean, logvar, &d_mean, &d_logvar);
    }
    *d_pred = d_mean * st->coef1 * dx0;
    *d_v = spec->learned_var ? d_logvar * 0.5 * st->log_var_range : 0.0;
    return term;
}

#endif
