/* The fused diffusion steps on the GPU, one kernel each:
 *   q_sample (float data) and q_sample_images: uint8 batch -> flip, scale to [-1, 1], eps,
 *   x_t, the target and
 *                    optionally x0, with t gathered in the kernel from device memory;
 *   mse_loss:        per-sample loss and the gradient in one pass, one block per sample,
 *                    the sum in double with the fixed-order block_sum;
 *   sample_update:   x0 from (x, model output), clip, posterior mean, + sigma*z (scaled
 *                    by the model's variance when it is learned);
 *   normal_fill;
 *   guidance_combine: classifier-free guidance's combine of a doubled batch's outputs.
 * All noise is philox_normal/philox_uniform(key, sample, element) from philox.h, the
 * same function the CPU backend calls, so both draw the same numbers (up to the last
 * ulp or two of the device's logf/sinf/cosf). */
#include "cuda_ops.cuh"

__device__ __forceinline__ float training_target(PredictionType pred, float x0, float eps,
                                                 float a, float b) {
    switch (pred) {
    case PRED_X0: return x0;
    case PRED_V: return a * eps - b * x0;
    default: return eps;
    }
}

/* Element e of sample s (output index (y, x, ch)) reads input pixel (y, w-1-x) when the
 * sample is flipped; the noise is drawn for e, so it stays put when the image flips. */
void cuda_q_sample_images(float *x_t, float *target, float *x0_out, const uint8_t *images,
                          const int32_t *t, const float *sqrt_ac, const float *sqrt_1m_ac, int n,
                          int h, int w, int c, PredictionType pred, int flip, RngKey flip_key,
                          RngKey eps_key) {
    const size_t per_sample = (size_t)h * w * c, row = (size_t)w * c;
    launch_elementwise((size_t)n * per_sample, [=] __device__(size_t i) {
        const uint32_t s = (uint32_t)(i / per_sample);
        const size_t e = i % per_sample;
        const int x = (int)(e % row / c), ch = (int)(e % c);
        const bool flipped = flip && philox_uniform(flip_key, s, 0) < 0.5f;
        const size_t src = i - e + e / row * row + (size_t)(flipped ? w - 1 - x : x) * c + ch;
        const float x0 = (float)images[src] / 127.5f - 1.0f;
        const float eps = philox_normal(eps_key, s, e);
        const float a = sqrt_ac[t[s]], b = sqrt_1m_ac[t[s]];
        x_t[i] = a * x0 + b * eps;
        target[i] = training_target(pred, x0, eps, a, b);
        if (x0_out) x0_out[i] = x0;
    });
}

void cuda_q_sample(float *x_t, float *target, const float *x0, const int32_t *t,
                   const float *sqrt_ac, const float *sqrt_1m_ac, int n, size_t d,
                   PredictionType pred, RngKey eps_key) {
    launch_elementwise((size_t)n * d, [=] __device__(size_t i) {
        const uint32_t s = (uint32_t)(i / d);
        const float eps = philox_normal(eps_key, s, i % d);
        const float a = sqrt_ac[t[s]], b = sqrt_1m_ac[t[s]];
        x_t[i] = a * x0[i] + b * eps;
        target[i] = training_target(pred, x0[i], eps, a, b);
    });
}

__global__ void mse_loss_kernel(float *loss_per_sample, float *dpred, const float *pred,
                                const float *target, size_t d, float grad_scale) {
    const size_t base = (size_t)blockIdx.x * d;
    double sum = 0;
    for (size_t e = threadIdx.x; e < d; e += THREADS) {
        const float diff = pred[base + e] - target[base + e];
        sum += (double)diff * diff;
        if (dpred) dpred[base + e] = grad_scale * diff;
    }
    sum = block_sum(sum);
    if (threadIdx.x == 0) loss_per_sample[blockIdx.x] = (float)(sum / (double)d);
}

void cuda_mse_loss(float *loss_per_sample, float *dpred, const float *pred, const float *target,
                   int n, size_t d) {
    if (n <= 0) return;
    /* PyTorch's mse_loss backward: 2/numel formed in double, applied in float */
    const float grad_scale = (float)(2.0 / ((double)n * (double)d));
    mse_loss_kernel<<<n, THREADS, 0, cuda.stream>>>(loss_per_sample, dpred, pred, target, d,
                                                   grad_scale);
    cudaCheckLaunch();
}

/* Where element e of sample s finds its prediction: with learned variances the
 * output interleaves [prediction (C) | v (C)] per pixel, and v follows C later. */
__device__ __forceinline__ size_t prediction_index(const SampleUpdate &u, size_t s, size_t d,
                                                   size_t e) {
    if (!u.learned_var) return s * d + e;
    const size_t c = (size_t)u.channels;
    return (s * (d / c) + e / c) * 2 * c + e % c;
}

/* sigma, scaled by exp(lv/2) of the model's own log variance when it is used */
__device__ __forceinline__ float noise_scale(const SampleUpdate &u, const float *model_out,
                                             size_t pi) {
    if (!u.use_model_var) return u.sigma;
    const float frac = 0.5f * (model_out[pi + (size_t)u.channels] + 1.0f);
    return u.sigma * expf(0.5f * (u.post_logvar + frac * u.log_var_range));
}

void cuda_sample_update(float *x, const float *model_out, int n, size_t d, SampleUpdate u,
                        RngKey z_key) {
    launch_elementwise((size_t)n * d, [=] __device__(size_t i) {
        const size_t s = i / d, e = i % d, pi = prediction_index(u, s, d, e);
        float x0 = u.x0_from_xt * x[i] + u.x0_from_out * model_out[pi];
        if (u.clip_x0) x0 = x0 < -1.0f ? -1.0f : x0 > 1.0f ? 1.0f : x0;   /* NaN stays NaN */
        float x_new = u.coef_x0 * x0 + u.coef_xt * x[i];
        if (u.sigma > 0.0f)
            x_new += noise_scale(u, model_out, pi) * philox_normal(z_key, (uint32_t)s, e);
        x[i] = x_new;
    });
}

/* cuda_sample_update with the update and the noise key's step read on the device. */
void cuda_sample_update_indexed(float *x, const float *model_out, int n, size_t d,
                                const SampleUpdate *table, const int32_t *step, RngKey z_key) {
    launch_elementwise((size_t)n * d, [=] __device__(size_t i) {
        const int index = *step;
        const SampleUpdate u = table[index];
        RngKey key = z_key;
        key.step = (uint32_t)index;
        const size_t s = i / d, e = i % d, pi = prediction_index(u, s, d, e);
        float x0 = u.x0_from_xt * x[i] + u.x0_from_out * model_out[pi];
        if (u.clip_x0) x0 = x0 < -1.0f ? -1.0f : x0 > 1.0f ? 1.0f : x0;
        float x_new = u.coef_x0 * x0 + u.coef_xt * x[i];
        if (u.sigma > 0.0f)
            x_new += noise_scale(u, model_out, pi) * philox_normal(key, (uint32_t)s, e);
        x[i] = x_new;
    });
}

void cuda_fill_indexed(float *y, size_t n, const float *table, const int32_t *step) {
    launch_elementwise(n, [=] __device__(size_t i) { y[i] = table[*step]; });
}

__global__ void advance_step_kernel(int32_t *step, int delta) { *step += delta; }

void cuda_advance_step(int32_t *step, int delta) {
    advance_step_kernel<<<1, 1, 0, cuda.stream>>>(step, delta);
    cudaCheckLaunch();
}

void cuda_normal_fill(float *x, int n, size_t d, RngKey key) {
    launch_elementwise((size_t)n * d, [=] __device__(size_t i) {
        x[i] = philox_normal(key, (uint32_t)(i / d), i % d);
    });
}

/* As the CPU reference: one fmaf per guided element, the variance channels copied. */
void cuda_guidance_combine(float *out, const float *pair, int n, size_t pixels, int c,
                           int learned_var, float scale) {
    const size_t c_out = (size_t)c * (learned_var ? 2 : 1), per_sample = pixels * c_out;
    const float *uncond = pair + (size_t)n * per_sample;
    const float uncond_weight = 1.0f - scale;
    launch_elementwise((size_t)n * per_sample, [=] __device__(size_t i) {
        const size_t channel = i % c_out;
        out[i] = channel < (size_t)c ? fmaf(scale, pair[i], uncond_weight * uncond[i]) : pair[i];
    });
}
