/* The KL autoencoder's ops on the CPU (backend.h): the diagonal Gaussian posterior's
 * sample and KL, and the reconstruction term, with their gradients. Sums per sample are
 * in double, in element order. */
#include <math.h>

#include "cpu_backend.h"

#define LOGVAR_MIN -30.0f
#define LOGVAR_MAX 20.0f

static float clamp_logvar(float lv) {
    return lv < LOGVAR_MIN ? LOGVAR_MIN : lv > LOGVAR_MAX ? LOGVAR_MAX : lv;
}

/* torch.clamp passes the gradient on [min, max] and stops it outside */
static int clamp_passes(float lv) { return lv >= LOGVAR_MIN && lv <= LOGVAR_MAX; }

void cpu_gaussian_sample_forward(float *z, const float *moments, const float *noise, int n,
                                 int hw, int c) {
    const size_t pixels = (size_t)n * hw;
#pragma omp parallel for schedule(static)
    for (size_t p = 0; p < pixels; p++)
        for (int ch = 0; ch < c; ch++) {
            const float mean = moments[p * 2 * c + ch], lv = moments[p * 2 * c + c + ch];
            z[p * c + ch] = mean + expf(0.5f * clamp_logvar(lv)) * noise[p * c + ch];
        }
}

void cpu_gaussian_sample_backward(float *dmoments, float beta, const float *dz,
                                  const float *moments, const float *noise, int n, int hw,
                                  int c) {
    if (!dmoments) return;
    const size_t pixels = (size_t)n * hw;
#pragma omp parallel for schedule(static)
    for (size_t p = 0; p < pixels; p++)
        for (int ch = 0; ch < c; ch++) {
            const size_t im = p * 2 * c + ch, il = im + c, iz = p * c + ch;
            const float lv = moments[il];
            const float dlv = clamp_passes(lv)
                                  ? dz[iz] * noise[iz] * expf(0.5f * clamp_logvar(lv)) * 0.5f
                                  : 0.0f;
            dmoments[im] = beta == 0.0f ? dz[iz] : beta * dmoments[im] + dz[iz];
            dmoments[il] = beta == 0.0f ? dlv : beta * dmoments[il] + dlv;
        }
}

void cpu_gaussian_kl(float *kl, float *dmoments, const float *moments, int n, int hw, int c,
                     float weight) {
    const double scale = (double)weight / n;
#pragma omp parallel for schedule(static)
    for (int s = 0; s < n; s++) {
        double sum = 0;
        for (size_t p = (size_t)s * hw; p < (size_t)(s + 1) * hw; p++)
            for (int ch = 0; ch < c; ch++) {
                const size_t im = p * 2 * c + ch, il = im + c;
                const double mean = moments[im], lv = clamp_logvar(moments[il]);
                const double var = exp(lv);
                sum += mean * mean + var - 1.0 - lv;
                if (!dmoments) continue;
                dmoments[im] = (float)(scale * mean);
                dmoments[il] = clamp_passes(moments[il]) ? (float)(scale * 0.5 * (var - 1.0)) : 0.0f;
            }
        kl[s] = (float)(0.5 * sum);
    }
}

void cpu_recon_loss(float *loss, float *dout, float *dlogvar, const float *out,
                    const float *target, const float *logvar, int n, size_t d, int l1) {
    const double lv = logvar ? (double)*logvar : 0.0, inv_var = exp(-lv);
    const double scale = inv_var / n;
    double dlv = 0;
    for (int s = 0; s < n; s++) {
        double sum = 0;
        for (size_t e = (size_t)s * d; e < (size_t)(s + 1) * d; e++) {
            const double diff = (double)out[e] - (double)target[e];
            sum += l1 ? fabs(diff) : diff * diff;
            if (dout)
                dout[e] = (float)(scale * (l1 ? (diff > 0) - (diff < 0) : 2.0 * diff));
        }
        loss[s] = (float)(sum * inv_var + (double)d * lv);
        dlv += (double)d - sum * inv_var;
    }
    if (dlogvar) *dlogvar = (float)(dlv / n);
}
