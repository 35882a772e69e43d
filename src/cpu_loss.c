/* The fused DDPM losses on the CPU: L_simple (the MSE of the prediction) and the
 * variational-bound term L_t in bits/dim, with their gradients, one pass per sample.
 * The scalar formulas live in vlb_math.h, shared with the CUDA backend. */
#include <math.h>

#include "cpu_backend.h"
#include "vlb_math.h"

typedef struct {          /* one sample's gathered per-timestep values */
    int t;
    double a, b;          /* x0 = a*x_t + b*prediction */
    double coef1, coef2, post_logvar, log_var_range, fixed_logvar;
} StepTables;

static StepTables gather(const DiffusionTables *tb, int t) {
    StepTables st = {t, tb->x0_from_xt[t], tb->x0_from_out[t], tb->coef1[t], tb->coef2[t],
                     tb->post_logvar[t], tb->log_var_range[t], tb->fixed_logvar[t]};
    return st;
}

/* One element's L_t (nats) and its derivatives by the prediction and by v. */
static double vb_element(const StepTables *st, const LossSpec *spec, double pred, double v,
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

static void loss_one_sample(float *mse, float *vb, float *dout, const float *out,
                            const float *target, const float *x0, const float *x_t, int s, int t,
                            double scale, int hw, int c, const LossSpec *spec,
                            const DiffusionTables *tables) {
    StepTables st = gather(tables, t);
    size_t d = (size_t)hw * c, stride = spec->learned_var ? 2 * (size_t)c : (size_t)c;
    double mse_sum = 0, vb_sum = 0, inv_d = 1.0 / (double)d, inv_ln2 = 1.0 / log(2.0);
    for (int p = 0; p < hw; p++) {
        for (int ch = 0; ch < c; ch++) {
            size_t i = (size_t)s * d + (size_t)p * c + ch;          /* x0, x_t, target */
            size_t pi = ((size_t)s * hw + p) * stride + ch;          /* prediction */
            double pred = out[pi], diff = pred - target[i];
            double d_pred = 0, d_v = 0;
            mse_sum += diff * diff;
            if (vb) {
                double v = spec->learned_var ? out[pi + c] : 0.0;
                vb_sum += vb_element(&st, spec, pred, v, x0[i], x_t[i], &d_pred, &d_v);
                d_pred *= spec->vb_trains_mean ? spec->vb_weight * inv_d * inv_ln2 : 0.0;
                d_v *= spec->vb_weight * inv_d * inv_ln2;
            }
            if (!dout) continue;
            dout[pi] = (float)(scale * (spec->mse_weight * 2.0 * diff * inv_d + d_pred));
            if (spec->learned_var) dout[pi + c] = (float)(scale * d_v);
        }
    }
    if (mse) mse[s] = (float)(mse_sum * inv_d);
    if (vb) vb[s] = (float)(vb_sum * inv_d * inv_ln2);
}

void cpu_diffusion_loss(float *mse, float *vb, float *dout, const float *out, const float *target,
                        const float *x0, const float *x_t, const int32_t *t, const float *weight,
                        int n, int hw, int c, LossSpec spec, DiffusionTables tables) {
#pragma omp parallel for schedule(static)
    for (int s = 0; s < n; s++) {
        double scale = (weight ? weight[s] : 1.0) / n;
        loss_one_sample(mse, vb, dout, out, target, x0, x_t, s, t[s], scale, hw, c, &spec,
                        &tables);
    }
}
