/* Optimizer ops of the CPU backend over flat parameter buffers: the gradient norm
 * for clipping, AdamW with PyTorch's order of operations, and the EMA of weights.
 * The norm is a fixed-order blocked sum, so it does not change with the number of
 * threads. */
#include <math.h>

#include "bf16.h"
#include "cpu_backend.h"

enum {
    PARALLEL_MIN = 1 << 15,     /* elements below which one thread is faster */
    NORM_CHUNK = 1 << 16,       /* elements per partial sum of global_norm */
    NORM_LANES = 8,             /* independent accumulators, so the sum vectorizes */
};

/* Sum of squares in double over a fixed lane split, then lanes in order. */
static double sum_of_squares(const float *g, size_t n) {
    double lanes[NORM_LANES] = {0};
    size_t i = 0;
    for (; i + NORM_LANES <= n; i += NORM_LANES)
        for (int k = 0; k < NORM_LANES; k++) lanes[k] += (double)g[i + k] * g[i + k];
    double total = 0;
    for (; i < n; i++) total += (double)g[i] * g[i];
    for (int k = 0; k < NORM_LANES; k++) total += lanes[k];
    return total;
}

void cpu_global_norm(float *out, const float *g, size_t n) {
    size_t chunks = (n + NORM_CHUNK - 1) / NORM_CHUNK;
    static CpuScratch kept;   /* the partial sums, kept between calls */
    double *partial = cpu_scratch(&kept, (chunks ? chunks : 1) * sizeof(double));
#pragma omp parallel for schedule(static) if (chunks > 1)
    for (size_t k = 0; k < chunks; k++) {
        size_t start = k * NORM_CHUNK, len = n - start < NORM_CHUNK ? n - start : NORM_CHUNK;
        partial[k] = sum_of_squares(g + start, len);
    }
    double total = 0;
    for (size_t k = 0; k < chunks; k++) total += partial[k];
    *out = (float)sqrt(total);
}

/* torch.optim.AdamW (_single_tensor_adamw, not amsgrad): scalars are formed in
 * double as Python does, then applied in float:
 *   p *= 1 - lr*wd;  m.lerp_(g, 1-b1);  v = v*b2 + (1-b2)*g*g;
 *   denom = sqrt(v)/sqrt(bias_c2) + eps;  p += -(lr/bias_c1) * m/denom
 * and, for mixed precision, the bf16 compute copy of p in the same pass. */
void cpu_adamw(float *p, float *p_bf16, const float *g, float *m, float *v, size_t n, float lr,
               float b1, float b2, float eps, float wd, float bias_c1, float bias_c2,
               float grad_scale) {
    float decay = (float)(1.0 - (double)lr * wd);
    float m_weight = (float)(1.0 - b1), v_weight = (float)(1.0 - b2);
    float neg_step = (float)(-(double)lr / bias_c1);
    float bias_c2_sqrt = (float)sqrt((double)bias_c2);
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) {
        float grad = g[i] * grad_scale;
        p[i] *= decay;
        m[i] += m_weight * (grad - m[i]);   /* lerp with weight < 0.5, as ATen forms it */
        v[i] = v[i] * b2 + v_weight * grad * grad;
        float denom = sqrtf(v[i]) / bias_c2_sqrt + eps;
        p[i] += neg_step * (m[i] / denom);
        if (p_bf16) p_bf16[i] = bf16_round(p[i]);
    }
}

void cpu_ema_update(float *ema, const float *p, size_t n, float decay) {
    float keep = 1.0f - decay;
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) ema[i] = decay * ema[i] + keep * p[i];
}
