/* Scalar pieces of the variational bound, shared by host C and CUDA so that every
 * backend evaluates the same formulas (improved-diffusion's losses.py):
 * the KL between two Gaussians, the discretized Gaussian log-likelihood of the
 * decoder p(x0|x1) over 256 bins with open edge bins, and their derivatives. */
#ifndef DDPM_VLB_MATH_H
#define DDPM_VLB_MATH_H

#include <math.h>
#include "philox.h"   /* DDPM_HD */

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

#endif
