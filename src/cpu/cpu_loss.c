/* The losses on the CPU: the fused DDPM losses (L_simple, the MSE of the prediction, and
 * the variational-bound term L_t in bits/dim, with their gradients, one pass per sample),
 * and the softmax cross-entropy of a classifier.
 * The scalar formulas live in vlb_math.h, shared with the CUDA backend. */
#include <math.h>

#include "cpu_backend.h"
#include "vlb_math.h"

static void loss_one_sample(float *mse, float *vb, float *dout, const float *out,
                            const float *target, const float *x0, const float *x_t, int s, int t,
                            double scale, int hw, int c, const LossSpec *spec,
                            const DiffusionTables *tables) {
    StepTables st = gather_step_tables(tables, t);
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

void cpu_cross_entropy(float *loss, float *correct, float *dlogits, const float *logits,
                       const int32_t *labels, int n, int classes, float grad_scale) {
    for (int s = 0; s < n; s++) {
        const float *z = logits + (size_t)s * classes;
        int best = 0;
        for (int k = 1; k < classes; k++)
            if (z[k] > z[best]) best = k;
        double sum = 0;   /* shifted by the maximum, so exp never overflows */
        for (int k = 0; k < classes; k++) sum += exp((double)z[k] - z[best]);
        const int y = labels[s];
        loss[s] = (float)(log(sum) + z[best] - z[y]);
        if (correct) correct[s] = best == y ? 1.0f : 0.0f;
        if (!dlogits) continue;
        for (int k = 0; k < classes; k++) {
            double p = exp((double)z[k] - z[best]) / sum;
            dlogits[(size_t)s * classes + k] = (float)(grad_scale * (p - (k == y)));
        }
    }
}
