/* The fused diffusion steps of the CPU backend: forward noising of a uint8 batch
 * (or of float data),
 * the MSE loss, one reverse sampling update and Gaussian fill. All noise comes
 * from philox_normal(key, sample, element), so the draws do not depend on how the
 * loops are split over threads, nor on the backend. */
#include <math.h>

#include "cpu_backend.h"

enum { PARALLEL_MIN = 1 << 14 };    /* elements below which one thread is faster */

static inline int sample_is_flipped(int flip, RngKey flip_key, int s) {
    return flip && philox_uniform(flip_key, (uint32_t)s, 0) < 0.5f;
}

static inline float training_target(PredictionType pred, float x0, float eps, float a, float b) {
    switch (pred) {
    case PRED_X0: return x0;
    case PRED_V: return a * eps - b * x0;
    default: return eps;
    }
}

/* One image row: (y, x, ch) of the output reads (y, flipped ? w-1-x : x, ch) of the
 * input; e is the output's flat index within the sample, so the noise stays put
 * when the image flips. */
static void q_sample_row(float *x_t, float *target, float *x0_out, const uint8_t *src_row,
                         size_t e0, int w,
                         int c, int flipped, float a, float b, PredictionType pred, RngKey eps_key,
                         int s) {
    for (int x = 0; x < w; x++) {
        const uint8_t *pixel = src_row + (size_t)(flipped ? w - 1 - x : x) * c;
        for (int ch = 0; ch < c; ch++) {
            size_t k = (size_t)x * c + ch;
            float x0 = (float)pixel[ch] / 127.5f - 1.0f;
            float eps = philox_normal(eps_key, (uint32_t)s, e0 + k);
            x_t[k] = a * x0 + b * eps;
            target[k] = training_target(pred, x0, eps, a, b);
            if (x0_out) x0_out[k] = x0;
        }
    }
}

void cpu_q_sample_images(float *x_t, float *target, float *x0, const uint8_t *images,
                         const int32_t *t,
                         const float *sqrt_ac, const float *sqrt_1m_ac, int n, int h, int w,
                         int c, PredictionType pred, int flip, RngKey flip_key, RngKey eps_key) {
    size_t row = (size_t)w * c;
#pragma omp parallel for collapse(2) schedule(static) if ((size_t)n * h * row >= PARALLEL_MIN)
    for (int s = 0; s < n; s++) {
        for (int y = 0; y < h; y++) {
            size_t off = ((size_t)s * h + y) * row;
            q_sample_row(x_t + off, target + off, x0 ? x0 + off : NULL, images + off,
                         (size_t)y * row, w, c,
                         sample_is_flipped(flip, flip_key, s), sqrt_ac[t[s]], sqrt_1m_ac[t[s]],
                         pred, eps_key, s);
        }
    }
}

void cpu_q_sample(float *x_t, float *target, const float *x0, const int32_t *t,
                  const float *sqrt_ac, const float *sqrt_1m_ac, int n, size_t d,
                  PredictionType pred, RngKey eps_key) {
#pragma omp parallel for schedule(static) if ((size_t)n * d >= PARALLEL_MIN)
    for (int s = 0; s < n; s++) {
        const float a = sqrt_ac[t[s]], b = sqrt_1m_ac[t[s]];
        for (size_t e = 0; e < d; e++) {
            size_t k = (size_t)s * d + e;
            float eps = philox_normal(eps_key, (uint32_t)s, e);
            x_t[k] = a * x0[k] + b * eps;
            target[k] = training_target(pred, x0[k], eps, a, b);
        }
    }
}

void cpu_mse_loss(float *loss_per_sample, float *dpred, const float *pred, const float *target,
                  int n, size_t d) {
    /* PyTorch's mse_loss backward scales by 2/numel formed in double, applied in float */
    float grad_scale = (float)(2.0 / ((double)n * (double)d));
#pragma omp parallel for schedule(static) if ((size_t)n * d >= PARALLEL_MIN)
    for (int s = 0; s < n; s++) {
        const float *p = pred + (size_t)s * d, *q = target + (size_t)s * d;
        double sum = 0;
        for (size_t e = 0; e < d; e++) {
            float diff = p[e] - q[e];
            sum += (double)diff * diff;
            if (dpred) dpred[(size_t)s * d + e] = grad_scale * diff;
        }
        loss_per_sample[s] = (float)(sum / (double)d);
    }
}

static inline float clamp_unit(float v) { return v < -1.0f ? -1.0f : v > 1.0f ? 1.0f : v; }

/* Where element e of sample s finds its prediction: with learned variances the
 * output interleaves [prediction (C) | v (C)] per pixel, and v follows C later. */
static inline size_t prediction_index(const SampleUpdate *u, int s, size_t d, size_t e) {
    if (!u->learned_var) return (size_t)s * d + e;
    size_t c = (size_t)u->channels;
    return ((size_t)s * (d / c) + e / c) * 2 * c + e % c;
}

static inline float noise_scale(const SampleUpdate *u, const float *model_out, size_t pi) {
    if (!u->use_model_var) return u->sigma;
    float frac = 0.5f * (model_out[pi + (size_t)u->channels] + 1.0f);
    return u->sigma * expf(0.5f * (u->post_logvar + frac * u->log_var_range));
}

void cpu_sample_update(float *x, const float *model_out, int n, size_t d, SampleUpdate u,
                       RngKey z_key) {
#pragma omp parallel for collapse(2) schedule(static) if ((size_t)n * d >= PARALLEL_MIN)
    for (int s = 0; s < n; s++) {
        for (size_t e = 0; e < d; e++) {
            size_t i = (size_t)s * d + e, pi = prediction_index(&u, s, d, e);
            float x0 = u.x0_from_xt * x[i] + u.x0_from_out * model_out[pi];
            if (u.clip_x0) x0 = clamp_unit(x0);
            float x_new = u.coef_x0 * x0 + u.coef_xt * x[i];
            if (u.sigma > 0.0f)
                x_new += noise_scale(&u, model_out, pi) * philox_normal(z_key, (uint32_t)s, e);
            x[i] = x_new;
        }
    }
}

void cpu_sample_update_indexed(float *x, const float *model_out, int n, size_t d,
                               const SampleUpdate *table, const int32_t *step, RngKey z_key) {
    z_key.step = (uint32_t)*step;
    cpu_sample_update(x, model_out, n, d, table[*step], z_key);
}

void cpu_fill_indexed(float *y, size_t n, const float *table, const int32_t *step) {
    cpu_fill(y, table[*step], n);
}

void cpu_advance_step(int32_t *step, int delta) { *step += delta; }

void cpu_normal_fill(float *x, int n, size_t d, RngKey key) {
#pragma omp parallel for collapse(2) schedule(static) if ((size_t)n * d >= PARALLEL_MIN)
    for (int s = 0; s < n; s++)
        for (size_t e = 0; e < d; e++) x[(size_t)s * d + e] = philox_normal(key, (uint32_t)s, e);
}

/* One fmaf: at scale s the result is s*cond + (1-s)*uncond rounded once, the same on
 * every backend (s = 3 gives 3 cond - 2 uncond exactly rounded). */
void cpu_guidance_combine(float *out, const float *pair, int n, size_t pixels, int c,
                          int learned_var, float scale) {
    const size_t c_out = (size_t)c * (learned_var ? 2 : 1), per_sample = pixels * c_out;
    const float *uncond = pair + (size_t)n * per_sample;
    const float uncond_weight = 1.0f - scale;
#pragma omp parallel for schedule(static)
    for (long long i = 0; i < (long long)n * (long long)per_sample; i++) {
        size_t channel = (size_t)i % c_out;
        out[i] = channel < (size_t)c ? fmaf(scale, pair[i], uncond_weight * uncond[i]) : pair[i];
    }
}
